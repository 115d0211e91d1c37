"""Data about tasks: class names, prompt templates, and the checks every task config shares."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from fusion_bench.errors import FusionBenchError


def check_task_entry(cfg: Any, where: str, allowed: Set[str]) -> Any:
    """Check the keys every task config shares and return its ``metadata.version``.

    Args:
        cfg: the task's config mapping.
        where: its config path, for errors (e.g. ``taskpool.tasks.eurosat``).
        allowed: the keys this kind of task accepts.

    Raises:
        FusionBenchError: not a mapping, unknown keys, no ``dataset`` or no ``metadata.version``.
    """
    if not isinstance(cfg, Mapping):
        raise FusionBenchError(f"{where} must be a mapping with at least 'dataset', got {cfg!r}")
    unknown = set(cfg) - set(allowed)
    if unknown:
        raise FusionBenchError(
            f"{where} has unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    if not cfg.get("dataset"):
        raise FusionBenchError(f"{where}.dataset is missing: give a hub id or a local path")
    metadata = cfg.get("metadata") or {}
    if "version" not in metadata:
        raise FusionBenchError(f"{where}.metadata.version is missing (written into every report)")
    return metadata["version"]
