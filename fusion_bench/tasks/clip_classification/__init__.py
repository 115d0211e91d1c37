"""Class names and CLIP prompt templates of image-classification tasks.

Each real task lives in its own module exposing ``CLASSNAMES`` (list of str, in label order) and
``TEMPLATES`` (list of format strings with one ``{}`` for the class name). The tiny benchmark's
tasks live in :mod:`fusion_bench.tasks.clip_classification.tiny` as ``TINY_TASKS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fusion_bench.errors import FusionBenchError

# task name (as used in configs) -> module holding CLASSNAMES / TEMPLATES
_REAL_TASKS = {
    "sun397": "sun397",
    "stanford-cars": "stanford_cars",
    "resisc45": "resisc45",
    "eurosat": "eurosat",
    "svhn": "svhn",
    "gtsrb": "gtsrb",
    "mnist": "mnist",
    "dtd": "dtd",
}


@dataclass(frozen=True)
class CLIPTask:
    """Text side of a zero-shot classification task."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def prompts(self, classname: str) -> list[str]:
        return [t.format(classname) for t in self.templates]


def available_tasks() -> list[str]:
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS

    return [*_REAL_TASKS, *TINY_TASKS]


def get_task(name: str) -> CLIPTask:
    """Class names and templates of task ``name``.

    Raises:
        FusionBenchError: unknown task (lists the known ones).
    """
    if name in _REAL_TASKS:
        mod = importlib.import_module(f"{__name__}.{_REAL_TASKS[name]}")
        return CLIPTask(name, tuple(mod.CLASSNAMES), tuple(mod.TEMPLATES))
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS

    if name in TINY_TASKS:
        classnames, templates = TINY_TASKS[name]
        return CLIPTask(name, tuple(classnames), tuple(templates))
    raise FusionBenchError(
        f"unknown image-classification task '{name}'; known tasks: {', '.join(available_tasks())} "
        "(or give classnames and templates in the task config)"
    )
