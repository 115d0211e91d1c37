"""Building a tiny benchmark into the cache once, safely across processes (shared by the CLIP
and text benchmarks)."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_bench.errors import FusionBenchError

log = logging.getLogger(__name__)


def build_is_complete(root: Path, version: int, needed: Iterable[Path]) -> bool:
    """Whether ``root`` holds a finished build: ``BUILD_INFO.json`` (written last) of
    ``version`` and every path of ``needed``."""
    try:
        info = json.loads((Path(root) / "BUILD_INFO.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("version") == version and all(p.exists() for p in needed)


def ensure_built_at(
    root: Path,
    *,
    is_complete: Callable[[Path], bool],
    build: Callable[[Path], None],
    what: str,
    force: bool = False,
) -> Path:
    """``root``, built first by ``build(root)`` unless ``is_complete(root)`` (or ``force``).

    A file lock serialises builders across processes; whoever waited re-checks completeness
    before building, so a build runs once. ``build`` writes into a temporary sibling that it
    renames into place, and marks completion last.
    """
    if not force and is_complete(root):
        return root
    from filelock import FileLock, Timeout

    root.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building the %s in %s", what, root)
        lock.acquire()
    try:
        if not force and is_complete(root):  # built by whoever held the lock before us
            return root
        log.info("building the %s into %s; this runs once", what, root)
        build(root)
        return root
    finally:
        lock.release()


def build_atomically(
    root: Path, write: Callable[[Path], dict[str, Any]], info: dict[str, Any]
) -> Path:
    """Run ``write(tmp)`` in a temporary sibling of ``root``, then write
    ``BUILD_INFO.json`` (``info`` + what ``write`` returned; the completion marker, last) and
    rename the directory to ``root``, replacing an incomplete or outdated build.

    Torch runs on at most 8 threads meanwhile: tiny matrices gain nothing from more.
    """
    import os
    import shutil
    import tempfile

    import torch

    from fusion_bench.utils.io import atomic_write_json

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    try:
        atomic_write_json(tmp / "BUILD_INFO.json", {**info, **write(tmp)})
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@dataclass(frozen=True)
class TinyBenchmark:
    """One tiny benchmark's place in the cache and how to build it.

    Builds live in ``<cache_dir()>/<name>/<profile>-seed<seed>-v<version>/``; a build is
    complete when its ``BUILD_INFO.json`` has ``version`` and every path of ``needed(root)``
    exists. ``builder`` names the module whose ``build_files(out, *, profile, params, seed)``
    writes one into ``out`` and returns its ``BUILD_INFO.json`` content (imported only when building, so that importing a benchmark stays cheap).
    """

    name: str
    what: str
    version: int
    profiles: Mapping[str, Any]
    needed: Callable[[Path], list[Path]]
    builder: str
    sources: Mapping[str, int] = field(default_factory=dict)
    """Other builds this one is made from (name -> version), e.g. a conversion's source."""

    def identity(self, profile: str) -> str:
        """What a build of ``profile`` is made of: name, profile and recipe versions (its own and
        its sources'). Reports key their configs with it, so bumping a version re-runs grids."""
        deps = "".join(f"+{n}-v{v}" for n, v in sorted(self.sources.items()))
        return f"{self.name}/{profile}-v{self.version}{deps}"

    def profile(self, profile: str) -> Any:
        """The parameters of ``profile``.

        Raises:
            FusionBenchError: unknown profile (the message lists the known ones).
        """
        if profile not in self.profiles:
            raise FusionBenchError(
                f"unknown {self.what} profile '{profile}'; known profiles: "
                f"{', '.join(self.profiles)}"
            )
        return self.profiles[profile]

    def root(self, profile: str = "default", *, seed: int = 0) -> Path:
        """Where the build of ``profile`` / ``seed`` lives (whether or not it exists yet).

        Raises:
            FusionBenchError: unknown profile.
        """
        from fusion_bench.constants import cache_dir

        self.profile(profile)
        return cache_dir() / self.name / f"{profile}-seed{seed}-v{self.version}"

    def is_complete(self, root: Path) -> bool:
        """Whether ``root`` holds a finished build of the current version."""
        return build_is_complete(Path(root), self.version, self.needed(Path(root)))

    def ensure_built(self, profile: str = "default", *, seed: int = 0, force: bool = False) -> Path:
        """Root directory of a complete build of ``profile``, building it first if needed.

        Safe across processes (see :func:`ensure_built_at`): a file lock serialises builders,
        the build goes into a temporary sibling directory that is renamed into place, and
        ``BUILD_INFO.json`` (written last) marks it complete.

        Args:
            profile: a name of :attr:`profiles` (``"default"``, ``"smoke"``).
            seed: seed of the data, initialisation and training.
            force: rebuild even if a complete build exists.

        Raises:
            FusionBenchError: unknown profile.
        """
        params = self.profile(profile)

        def build(root: Path) -> None:
            builder = importlib.import_module(self.builder)
            build_atomically(
                root,
                lambda out: builder.build_files(out, profile=profile, params=params, seed=seed),
                {"profile": profile, "seed": seed, "version": self.version},
            )

        return ensure_built_at(
            self.root(profile, seed=seed),
            is_complete=self.is_complete,
            build=build,
            what=f"{self.what} (profile {profile!r}, seed {seed})",
            force=force,
        )
