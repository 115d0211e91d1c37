"""A CLIP text tower turned into per-task classifiers for any vision tower.

:class:`CLIPZeroShotClassifier` loads (lazily, once, through a text tower of
:mod:`fusion_bench.zero_shot.text_towers`: Hugging Face or open_clip) the CLIP without its
vision tower, its tokenizer and image transform; opens each task's dataset splits; computes each
task's zero-shot head once per text tower (cached on disk); and computes logits of a given vision
tower. The CLIP task pool evaluates with it; the CLIP model pool hands it to data-dependent
methods (task logits on training / test batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.zero_shot.tasks import ImageTask
from fusion_bench.zero_shot.text_towers import HFTextTower, OpenCLIPTextTower

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn


def ensemble_members(model: nn.Module) -> list[nn.Module]:
    """The vision towers whose logits are averaged: an ensemble's members, else the model."""
    from torch import nn

    from fusion_bench.models.ensemble import EnsembleModel

    if isinstance(model, EnsembleModel):
        return list(model.members)
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList):
        return list(members)
    return [model]


class CLIPZeroShotClassifier:
    """Zero-shot heads and logits of a CLIP text tower for a set of image tasks.

    Args:
        clip_model: location of the full Hugging Face CLIP (hub id, ``save_pretrained`` dir or
            ``tiny://``; its tokenizer and image processor are read from the same location), or
            a text tower of :mod:`fusion_bench.zero_shot.text_towers` (e.g. an open_clip one).
        tasks: parsed task configs by name.
        head_cache_dir: directory of the zero-shot head cache.
        config_prefix: how configs name these tasks in errors (``taskpool`` / ``modelpool``).
    """

    def __init__(
        self,
        clip_model: str | HFTextTower | OpenCLIPTextTower,
        tasks: Mapping[str, ImageTask],
        head_cache_dir: str,
        config_prefix: str,
    ) -> None:
        if isinstance(clip_model, str):
            clip_model = HFTextTower(clip_model, hint=f"{config_prefix}.clip_model=/path/to/clip")
        self.text_tower = clip_model
        self.tasks = dict(tasks)
        self.head_cache_dir = str(head_cache_dir)
        self.prefix = config_prefix
        self._fingerprint: str | None = None
        self._datasets: dict[tuple[str, str], datasets.Dataset] = {}
        self._heads: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def clip_model(self) -> str:
        """Which text tower gives the heads (a location, or a library + model description)."""
        return self.text_tower.description

    def task(self, name: str) -> ImageTask:
        try:
            return self.tasks[name]
        except KeyError:
            raise FusionBenchError(
                f"{self.prefix} has no task '{name}'; tasks: {', '.join(self.tasks) or '(none)'}"
            ) from None

    # -- loading -----------------------------------------------------------------------------
    def load_clip(self) -> tuple[nn.Module, Any]:
        """The CLIP model (without its vision tower) and tokenizer, loaded once."""
        return self.text_tower.load()

    @property
    def transform(self):
        """The image transform of the CLIP's image processor (loads CLIP on first use)."""
        return self.text_tower.transform

    def load_dataset(self, name: str, split: str | None = None) -> datasets.Dataset:
        """Split ``split`` (default: the task's ``split``) of task ``name``, opened once and checked."""
        from fusion_bench.utils.data import check_columns, load_dataset_split, num_label_classes

        t = self.task(name)
        split = split or t.split
        if (name, split) not in self._datasets:
            ds = load_dataset_split(
                t.dataset,
                split=split,
                subset=t.subset,
                what=f"dataset of task '{name}'",
                hint=f"{self.prefix}.tasks.{name}.dataset=/path/to/dir",
            )
            check_columns(
                ds,
                [t.image_column, t.label_column],
                task=name,
                hint=f"{self.prefix}.tasks.{name}.image_column=... / label_column=...",
            )
            n = num_label_classes(ds, t.label_column)
            if n is not None and n != len(t.classnames):
                raise FusionBenchError(
                    f"task '{name}': the dataset's label column has {n} classes but "
                    f"{len(t.classnames)} class names are configured"
                )
            self._datasets[(name, split)] = ds
        return self._datasets[(name, split)]

    def task_data(self, name: str, split: str | None = None):
        """A torch ``Dataset`` of ``(pixel_values, label)`` for task ``name``'s ``split``."""
        from fusion_bench.zero_shot.image_datasets import ImageClassificationDataset

        t = self.task(name)
        return ImageClassificationDataset(
            self.load_dataset(name, split), t.image_column, t.label_column, self.transform
        )

    # -- heads and logits ---------------------------------------------------------------------
    def zero_shot_head(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        """Head ``[num_classes, embed_dim]`` of task ``name`` from the disk cache or computed."""
        from fusion_bench.zero_shot.head_cache import ZeroShotHeadCache, head_key

        if self._fingerprint is None:
            self._fingerprint = self.text_tower.fingerprint()
        t = self.task(name)
        key = head_key(self._fingerprint, t.classnames, t.templates)
        head = ZeroShotHeadCache(self.head_cache_dir).get_or_compute(
            key, lambda: self.text_tower.head(t.classnames, t.templates, device), task=name
        )
        return head if device is None else head.to(device)

    def head_on(self, name: str, device: torch.device | str) -> torch.Tensor:
        """Task ``name``'s head on ``device``, kept in memory (for training loops).

        A plain tensor (not an inference-mode one), so it may take part in autograd graphs,
        e.g. when a method backpropagates an entropy loss through the vision tower.
        """
        key = (name, str(device))
        if key not in self._heads:
            self._heads[key] = self.zero_shot_head(name, device).clone()
        return self._heads[key]

    def to(self, device: torch.device | str) -> CLIPZeroShotClassifier:
        """Move the text-side CLIP modules (projection, logit scale) to ``device``."""
        self.text_tower.to(device)
        return self

    def logits(
        self, model: nn.Module, pixel_values: torch.Tensor, head: torch.Tensor
    ) -> torch.Tensor:
        """Zero-shot logits ``[batch, classes]``; an ensemble averages its members' logits."""
        members = ensemble_members(model)
        out = self.text_tower.logits(members[0], pixel_values, head)
        for member in members[1:]:
            out = out + self.text_tower.logits(member, pixel_values, head)
        return out / len(members)
