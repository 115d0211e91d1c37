"""Resolving model / dataset locations: local paths, hub ids and the built-in tiny benchmark.

Every location in a config is one of
  * a local path (``/data/clip``, ``./ckpt``, ``~/models/x``) — used as it is;
  * ``tiny://<profile>/<relative path>`` — a file of the offline tiny CLIP benchmark,
    ``tiny-text://<profile>/<relative path>`` one of the tiny text (GLUE) benchmark, and
    ``tiny-openclip://<profile>/<relative path>`` one of the tiny CLIP benchmark converted to
    open_clip formats, built on first use;
  * a Hugging Face hub id (``openai/clip-vit-base-patch32``) — the real code path.

Hub ids are first tried from the local HF cache. If that misses and the hub cannot be reached,
a :class:`FusionBenchError` says so at once (instead of minutes of retries) and tells the user
to pass a local path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from fusion_bench.errors import FusionBenchError

T = TypeVar("T")
TINY_SCHEME = "tiny://"
# scheme -> module whose ``ensure_built(profile)`` returns the build's root directory
TINY_BENCHMARKS = {
    TINY_SCHEME: "fusion_bench.tinybench",
    "tiny-text://": "fusion_bench.tinybench.text",
    "tiny-openclip://": "fusion_bench.tinybench.openclip",
}


def _tiny_location(location: str) -> tuple[Any, str, str] | None:
    """``(benchmark module, profile, relative path)`` of a ``tiny*://`` location, else None."""
    scheme = next((s for s in TINY_BENCHMARKS if location.startswith(s)), None)
    if scheme is None:
        return None
    import importlib

    profile, _, rel = location[len(scheme) :].partition("/")
    return importlib.import_module(TINY_BENCHMARKS[scheme]), profile or "default", rel


def tiny_builds(config: Any) -> list[str]:
    """Identities of the tiny builds that the locations in ``config`` (nested dicts / lists of
    a resolved config) refer to, sorted: benchmark, profile and recipe versions (see
    :meth:`~fusion_bench.tinybench._cache.TinyBenchmark.identity`). Builds nothing."""
    found: set[str] = set()
    stack = [config]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
        elif isinstance(x, str) and (tiny := _tiny_location(x)) is not None:
            module, profile, _ = tiny
            found.add(module.BENCHMARK.identity(profile))
    return sorted(found)


def resolve_location(location: str) -> tuple[str, bool]:
    """Turn a config location into ``(path_or_hub_id, is_local)``.

    Raises:
        FusionBenchError: a path-like location that does not exist.
    """
    location = str(location)
    tiny = _tiny_location(location)
    if tiny is not None:
        module, profile, rel = tiny
        root = module.ensure_built(profile)
        path = root / rel
        if not path.exists():
            raise FusionBenchError(
                f"'{location}' is not part of the tiny benchmark (no {path}); "
                "check the name or delete the cache dir to rebuild"
            )
        return str(path), True
    expanded = Path(location).expanduser()
    if expanded.exists():
        return str(expanded), True
    if location.startswith(("/", "./", "../", "~")) or location.count("/") > 1:
        raise FusionBenchError(
            f"path '{location}' does not exist; pass an existing local directory or a hub id "
            "like 'owner/name'"
        )
    return location, False


def hub_offline() -> bool:
    """True when the user asked the HF libraries not to use the network."""
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_with_fallback(
    loader: Callable[..., T], location: str, *, what: str, hint: str, **kwargs
) -> T:
    """Load ``location`` with ``loader`` (e.g. ``CLIPVisionModel.from_pretrained``).

    Local paths load directly. Hub ids load from the HF cache if present, otherwise from the hub
    if it is reachable; if not, a one-line error names the location and how to pass a local path.

    Args:
        loader: a ``from_pretrained``-style callable accepting ``local_files_only``.
        location: the configured location.
        what: what is loaded, for the error message (e.g. ``"model 'eurosat'"``).
        hint: the override that points it at a local copy (e.g. ``"modelpool.models.eurosat=/path"``).
        **kwargs: forwarded to ``loader``.
    """
    path, is_local = resolve_location(location)
    if is_local:
        return loader(path, **kwargs)
    try:
        return loader(path, local_files_only=True, **kwargs)
    except Exception:  # not in the local HF cache: fall through to the hub
        pass
    if not hub_reachable():
        raise FusionBenchError(
            f"cannot reach the Hugging Face hub to fetch {what} '{path}' (offline and not in the "
            f"HF cache); pass a local path instead: {hint}"
        )
    return loader(path, **kwargs)
