"""CLIP zero-shot image classification: the task pool of the CLIP vision benchmarks.

The model under evaluation is a vision tower (``transformers.CLIPVisionModel`` or anything that
maps ``pixel_values`` to an output with ``pooler_output``). It takes the place of the vision tower
of a full pretrained CLIP, whose text tower turns each task's class names x prompt templates into
a zero-shot head (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", arXiv 2103.00020)::

    head_c   = normalise(mean_t normalise(text_proj(text_model(template_t.format(class_c)))))
    logits   = exp(logit_scale) * normalise(visual_proj(vision(x))) @ head.T

and reports top-1 accuracy and mean cross-entropy per task.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from string import Formatter
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import BaseTaskPool

if TYPE_CHECKING:
    import datasets
    import torch
    from lightning.fabric import Fabric
    from torch import nn

_TASK_KEYS = {
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


def _plain(obj: Any) -> Any:
    """OmegaConf containers (what Hydra's ``instantiate`` passes) to plain dicts and lists."""
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    return obj


def _parse_task(name: str, cfg: Mapping[str, Any]) -> ImageTask:
    where = f"taskpool.tasks.{name}"
    if not isinstance(cfg, Mapping):
        raise FusionBenchError(f"{where} must be a mapping with at least 'dataset', got {cfg!r}")
    unknown = set(cfg) - _TASK_KEYS
    if unknown:
        raise FusionBenchError(
            f"{where} has unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_TASK_KEYS))}"
        )
    if not cfg.get("dataset"):
        raise FusionBenchError(f"{where}.dataset is missing: give a hub id or a local path")
    metadata = cfg.get("metadata") or {}
    if "version" not in metadata:
        raise FusionBenchError(f"{where}.metadata.version is missing (written into every report)")
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
        version=metadata["version"],
    )


def _members(model: nn.Module) -> list[nn.Module]:
    """The vision towers whose logits are averaged: an ensemble's members, else the model."""
    try:
        from fusion_bench.models.ensemble import EnsembleModel
    except ImportError:  # written in parallel; the duck-typed check below covers it meanwhile
        EnsembleModel = None  # noqa: N806
    if EnsembleModel is not None and isinstance(model, EnsembleModel):
        return list(model.members)
    from torch import nn

    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList):
        return list(members)
    return [model]


class CLIPZeroShotTaskPool(BaseTaskPool):
    """Zero-shot image classification with a CLIP text tower and a given vision tower.

    Args:
        clip_model: location of the full CLIP (hub id, ``save_pretrained`` dir or ``tiny://``)
            whose text tower builds the heads; its tokenizer and image processor are read from
            the same location.
        tasks: ``name -> task config`` with keys ``dataset`` (location), ``split`` (default
            ``test``), ``subset`` (alias ``name``; hub configuration), ``image_column`` (default
            ``image``), ``label_column`` (default ``label``), ``classnames`` / ``templates``
            (default: the registry entry ``text_task``, itself defaulting to the task name) and
            ``metadata.version``.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (image decoding and transforms).
        limit_batches: evaluate at most this many batches per task (smoke runs); ``None``: all.
        head_cache_dir: where zero-shot heads are cached; ``None``:
            ``<cache_dir()>/zero_shot_heads``.
    """

    def __init__(
        self,
        clip_model: str,
        tasks: Mapping[str, Mapping[str, Any]],
        batch_size: int = 128,
        num_workers: int = 0,
        limit_batches: int | None = None,
        head_cache_dir: str | None = None,
    ) -> None:
        tasks = _plain(tasks)
        if not tasks:
            raise FusionBenchError(
                "the task pool is empty: give at least one entry in taskpool.tasks"
            )
        if batch_size < 1 or num_workers < 0 or (limit_batches is not None and limit_batches < 1):
            raise FusionBenchError(
                "taskpool needs batch_size >= 1, num_workers >= 0 and limit_batches >= 1 or null"
            )
        self.clip_model = str(clip_model)
        self.tasks: dict[str, ImageTask] = {
            str(n): _parse_task(str(n), _plain(c)) for n, c in tasks.items()
        }
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.limit_batches = limit_batches
        if head_cache_dir is None:
            from fusion_bench.constants import cache_dir

            head_cache_dir = str(cache_dir() / "zero_shot_heads")
        self.head_cache_dir = str(head_cache_dir)
        # Loaded on first use, so building the pool from a config costs nothing.
        self._clip: nn.Module | None = None
        self._tokenizer = None
        self._transform = None
        self._fingerprint: str | None = None
        self._datasets: dict[str, datasets.Dataset] = {}

    # -- description -------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def metadata(self) -> dict[str, Any]:
        """``{task: {"version", "dataset", "split"[, "subset"]}}`` for the report."""
        out: dict[str, Any] = {}
        for name, t in self.tasks.items():
            out[name] = {"version": t.version, "dataset": t.dataset, "split": t.split}
            if t.subset is not None:
                out[name]["subset"] = t.subset
        return out

    # -- loading -----------------------------------------------------------------------------
    def load_clip(self) -> tuple[nn.Module, Any]:
        """The CLIP model (without its vision tower) and tokenizer, loaded once."""
        if self._clip is None:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            from fusion_bench.models.clip_zero_shot import image_transform
            from fusion_bench.utils.hub import load_with_fallback

            kw = {"what": "CLIP model", "hint": "taskpool.clip_model=/path/to/clip"}
            clip = load_with_fallback(CLIPModel.from_pretrained, self.clip_model, **kw)
            self._tokenizer = load_with_fallback(
                AutoTokenizer.from_pretrained, self.clip_model, **kw
            )
            processor = load_with_fallback(
                AutoImageProcessor.from_pretrained, self.clip_model, **kw
            )
            self._transform = image_transform(processor)
            # The evaluated tower replaces CLIP's own, so drop it instead of holding (and moving
            # to the device) a second vision tower.
            del clip.vision_model
            self._clip = clip.eval().requires_grad_(False)
        return self._clip, self._tokenizer

    def load_dataset(self, name: str) -> datasets.Dataset:
        """Split of task ``name``, opened once, with its columns and class count checked."""
        if name not in self._datasets:
            from fusion_bench.taskpool.image_datasets import (
                check_columns,
                load_image_dataset,
                num_label_classes,
            )

            t = self._task(name)
            ds = load_image_dataset(
                t.dataset,
                split=t.split,
                subset=t.subset,
                what=f"dataset of task '{name}'",
                hint=f"taskpool.tasks.{name}.dataset=/path/to/dir",
            )
            check_columns(
                ds,
                [t.image_column, t.label_column],
                task=name,
                hint=f"taskpool.tasks.{name}.image_column=... / label_column=...",
            )
            n = num_label_classes(ds, t.label_column)
            if n is not None and n != len(t.classnames):
                raise FusionBenchError(
                    f"task '{name}': the dataset's label column has {n} classes but "
                    f"{len(t.classnames)} class names are configured"
                )
            self._datasets[name] = ds
        return self._datasets[name]

    def prepare(self) -> None:
        """Load CLIP and open every dataset now, so a bad location fails before a long fusion."""
        self.load_clip()
        for name in self.tasks:
            self.load_dataset(name)

    def _task(self, name: str) -> ImageTask:
        try:
            return self.tasks[name]
        except KeyError:
            raise FusionBenchError(
                f"task pool has no task '{name}'; tasks: {', '.join(self.tasks)}"
            ) from None

    # -- heads and logits ---------------------------------------------------------------------
    def zero_shot_head(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        """Head ``[num_classes, embed_dim]`` of task ``name`` from the disk cache or computed."""
        from fusion_bench.models import clip_zero_shot
        from fusion_bench.taskpool.head_cache import (
            ZeroShotHeadCache,
            head_key,
            text_tower_fingerprint,
        )

        clip, tokenizer = self.load_clip()
        if self._fingerprint is None:
            self._fingerprint = text_tower_fingerprint(clip, tokenizer)
        t = self._task(name)
        key = head_key(self._fingerprint, t.classnames, t.templates)
        head = ZeroShotHeadCache(self.head_cache_dir).get_or_compute(
            key,
            lambda: clip_zero_shot.zero_shot_head(
                clip, tokenizer, t.classnames, t.templates, device=device
            ),
            task=name,
        )
        return head if device is None else head.to(device)

    def logits(
        self, model: nn.Module, pixel_values: torch.Tensor, head: torch.Tensor
    ) -> torch.Tensor:
        """Zero-shot logits ``[batch, classes]``; an ensemble averages its members' logits."""
        from fusion_bench.models.clip_zero_shot import zero_shot_logits

        clip, _ = self.load_clip()
        members = _members(model)
        out = zero_shot_logits(clip, members[0], pixel_values, head)
        for member in members[1:]:
            out = out + zero_shot_logits(clip, member, pixel_values, head)
        return out / len(members)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self, model: nn.Module | Mapping[str, nn.Module], *, fabric: Fabric | None = None
    ) -> dict[str, dict[str, float]]:
        """Top-1 accuracy (in [0, 1]) and mean cross-entropy of ``model`` on every task.

        Args:
            model: a vision tower, an ensemble of them (attribute ``members``), or a mapping
                ``task -> vision tower`` evaluating each task with its own model.
            fabric: when given, its device and autocast precision are used; otherwise CPU.

        Raises:
            FusionBenchError: a task missing from a model mapping, or a data/location problem.
        """
        import torch

        if isinstance(model, Mapping):
            missing = [n for n in self.tasks if n not in model]
            if missing:
                raise FusionBenchError(
                    f"no model for task(s) {', '.join(missing)} in the per-task model mapping "
                    f"(it has: {', '.join(map(str, model))})"
                )
        device = torch.device(fabric.device) if fabric is not None else torch.device("cpu")
        self.prepare()
        self._clip.to(device)
        results = {}
        for name in self.tasks:
            if isinstance(model, Mapping):
                # Per-task experts go back where they were, so that eight of them do not pile up
                # on the accelerator one task after another.
                task_model = model[name]
                home = next(iter(task_model.parameters()), torch.empty(0)).device
                results[name] = self._evaluate_task(name, task_model, device, fabric)
                task_model.to(home)
            else:
                results[name] = self._evaluate_task(name, model, device, fabric)
        return results

    def _evaluate_task(
        self, name: str, model: nn.Module, device: torch.device, fabric: Fabric | None
    ) -> dict[str, float]:
        import torch
        import torch.nn.functional as F
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from fusion_bench.taskpool.image_datasets import ImageClassificationDataset

        t = self._task(name)
        data = ImageClassificationDataset(
            self.load_dataset(name), t.image_column, t.label_column, self._transform
        )
        loader = DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
        n_batches = (
            len(loader) if self.limit_batches is None else min(len(loader), self.limit_batches)
        )
        head = self.zero_shot_head(name, device)
        model.to(device).eval()
        # Sums stay on the device so the loop never waits for a host sync.
        correct = torch.zeros((), dtype=torch.long, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        autocast = fabric.autocast() if fabric is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            batches = itertools.islice(loader, n_batches)
            for images, labels in tqdm(
                batches, total=n_batches, desc=f"eval {name}", unit="batch", leave=False
            ):
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = self.logits(model, images, head).float()
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                correct += (logits.argmax(dim=-1) == labels).sum()
                count += labels.numel()
        if count == 0:
            raise FusionBenchError(f"task '{name}': the {t.split} split of '{t.dataset}' is empty")
        return {"accuracy": correct.item() / count, "loss": loss_sum.item() / count}
