"""Data about tasks: class names, prompt templates, and the checks every task config shares."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, TypeVar

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


SPLIT_ROLES = ("test", "validation")
"""What a task pool's ``split`` option may name: a role, mapped per task to a split name."""

_T = TypeVar("_T")


def evaluation_split(task: Any, role: str | None, prefix: str = "taskpool") -> str:
    """The split name a task pool evaluates ``task`` on for the split role ``role``.

    ``None`` / ``"test"`` is the task's own evaluation split (``task.split``); ``"validation"``
    its held-out ``task.validation_split`` (hyperparameter search). A task whose validation
    split is missing or is its evaluation split (GLUE: the benchmark evaluates on GLUE's
    labelled validation split) is refused, so tuning never silently reads the evaluation data.

    Args:
        task: a parsed task config with ``name``, ``split`` and ``validation_split``
            (:class:`~fusion_bench.zero_shot.tasks.ImageTask`,
            :class:`~fusion_bench.tasks.glue_data.TextTaskConfig`).
        role: ``None``, ``"test"`` or ``"validation"``.
        prefix: config path of the task pool, for the error message.

    Raises:
        FusionBenchError: an unknown role, or no held-out validation split for ``"validation"``.
    """
    if role is None or role == "test":
        return task.split
    if role not in SPLIT_ROLES:
        raise FusionBenchError(
            f"{prefix}.split must be null (each task's own split), test or validation, got {role!r}"
        )
    held_out = task.validation_split
    if held_out is None or held_out == task.split:
        raise FusionBenchError(
            f"task '{task.name}' has no held-out validation split apart from its evaluation "
            f"split '{task.split}' (tuning there would tune on the test data); set "
            f"{prefix}.tasks.{task.name}.validation_split=<held-out split, e.g. carved from train>"
        )
    return held_out


def with_split_role(
    tasks: Mapping[str, _T], role: str | None, prefix: str = "taskpool"
) -> dict[str, _T]:
    """``tasks`` with each ``split`` replaced by its :func:`evaluation_split` for ``role``.

    Args:
        tasks: ``name -> parsed task config`` (frozen dataclasses).
        role: ``None`` / ``"test"`` (unchanged) or ``"validation"``.
        prefix: config path of the task pool, for error messages.
    """
    import dataclasses

    return {
        n: dataclasses.replace(t, split=evaluation_split(t, role, prefix)) for n, t in tasks.items()
    }
