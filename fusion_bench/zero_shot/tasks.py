"""Image-classification task configs: what a task pool or model pool says about each task.

A task entry has ``dataset`` (location), ``split`` (default ``test``), ``subset`` (alias ``name``;
hub configuration), ``image_column`` / ``label_column``, optional ``classnames`` / ``templates``
(default: the registry entry ``text_task``, itself defaulting to the task name) and
``metadata.version``. Model pools add ``train_split`` / ``validation_split`` for the data that
data-dependent methods use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from string import Formatter
from typing import Any

from fusion_bench.errors import FusionBenchError

TASK_KEYS = {
    "dataset",
    "split",
    "subset",
    "name",
    "image_column",
    "label_column",
    "classnames",
    "templates",
    "text_task",
    "metadata",
    "train_split",
    "validation_split",
}


@dataclass(frozen=True)
class ImageTask:
    """One evaluation task, resolved from its config.

    Attributes:
        name: task name (the key under ``tasks``).
        dataset: dataset location as configured.
        split: split evaluated.
        subset: hub configuration name (``None`` for the default one).
        image_column: column holding the images.
        label_column: column holding integer labels.
        classnames: class names in label order.
        templates: prompt templates, each with one ``{}``.
        version: ``metadata.version`` of the task config.
        train_split: split that data-dependent methods train or estimate statistics on.
        validation_split: labelled held-out split (e.g. for routers or hyperparameter search).
    """

    name: str
    dataset: str
    split: str
    subset: str | None
    image_column: str
    label_column: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    version: Any
    train_split: str = "train"
    validation_split: str = "validation"


def plain(obj: Any) -> Any:
    """OmegaConf containers (what Hydra's ``instantiate`` passes) to plain dicts and lists."""
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    return obj


def parse_task(name: str, cfg: Mapping[str, Any], where: str) -> ImageTask:
    """Validate one task config (``where`` names it in errors, e.g. ``taskpool.tasks.eurosat``)."""
    from fusion_bench.tasks import check_task_entry

    version = check_task_entry(cfg, where, TASK_KEYS)
    classnames, templates = cfg.get("classnames"), cfg.get("templates")
    if classnames is None or templates is None:
        from fusion_bench.tasks.clip_classification import get_task

        text = get_task(cfg.get("text_task") or name)
        classnames = text.classnames if classnames is None else classnames
        templates = text.templates if templates is None else templates
    for t in templates:
        fields = [f for _, f, _, _ in Formatter().parse(t) if f is not None]
        if fields != [""]:
            raise FusionBenchError(
                f"{where}: template {t!r} must contain exactly one '{{}}' for the class name"
            )
    if not classnames or not templates:
        raise FusionBenchError(f"{where}: classnames and templates must not be empty")
    return ImageTask(
        name=name,
        dataset=str(cfg["dataset"]),
        split=str(cfg.get("split", "test")),
        subset=cfg.get("subset", cfg.get("name")),
        image_column=str(cfg.get("image_column", "image")),
        label_column=str(cfg.get("label_column", "label")),
        classnames=tuple(str(c) for c in classnames),
        templates=tuple(str(t) for t in templates),
        version=version,
        train_split=str(cfg.get("train_split", "train")),
        validation_split=str(cfg.get("validation_split", "validation")),
    )
