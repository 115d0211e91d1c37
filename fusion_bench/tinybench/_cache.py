"""Building a tiny benchmark into the cache once, safely across processes (shared by the CLIP
and text benchmarks)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

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
