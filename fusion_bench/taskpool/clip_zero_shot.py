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

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import (
    BaseTaskPool,
    TaskEvaluation,
    classification_metrics,
    classification_stats,
)
from fusion_bench.zero_shot.classifier import CLIPZeroShotClassifier
from fusion_bench.zero_shot.tasks import ImageTask, parse_task, plain

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn


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
        limit_batches: evaluate the first ``limit_batches * batch_size`` examples of each task
            (smoke runs; the same examples with any number of processes); ``None``: all.
        head_cache_dir: where zero-shot heads are cached; ``None``:
            ``<cache_dir()>/zero_shot_heads``.
        split: evaluate every task on this split role: ``None`` / ``"test"`` = each task's own
            ``split``; ``"validation"`` = its ``validation_split`` (default ``validation``), for
            hyperparameter search that never reads the test data.
    """

    def __init__(
        self,
        clip_model: str,
        tasks: Mapping[str, Mapping[str, Any]],
        batch_size: int = 128,
        num_workers: int = 0,
        limit_batches: int | None = None,
        head_cache_dir: str | None = None,
        split: str | None = None,
    ) -> None:
        tasks = plain(tasks)
        if not tasks:
            raise FusionBenchError(
                "the task pool is empty: give at least one entry in taskpool.tasks"
            )
        if batch_size < 1 or num_workers < 0 or (limit_batches is not None and limit_batches < 1):
            raise FusionBenchError(
                "taskpool needs batch_size >= 1, num_workers >= 0 and limit_batches >= 1 or null"
            )
        from fusion_bench.tasks import with_split_role

        self.clip_model = str(clip_model)
        parsed = {
            str(n): parse_task(str(n), plain(c), f"taskpool.tasks.{n}") for n, c in tasks.items()
        }
        self.split = split
        self.tasks: dict[str, ImageTask] = with_split_role(parsed, split)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.limit_batches = limit_batches
        if head_cache_dir is None:
            from fusion_bench.constants import cache_dir

            head_cache_dir = str(cache_dir() / "zero_shot_heads")
        self.head_cache_dir = str(head_cache_dir)
        # Loads nothing until first use, so building the pool from a config costs nothing.
        self.classifier = CLIPZeroShotClassifier(
            self.clip_model, self.tasks, self.head_cache_dir, "taskpool"
        )

    # -- description -------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def metadata(self) -> dict[str, Any]:
        """``{task: {"version", "dataset", "split"[, "subset"]}}`` for the report."""
        out: dict[str, Any] = {}
        for name, t in self.tasks.items():
            out[name] = {
                "version": t.version,
                "dataset": t.dataset,
                "split": t.split,
                "text_tower": self.classifier.clip_model,
            }
            if t.subset is not None:
                out[name]["subset"] = t.subset
        return out

    def bind_modelpool(self, modelpool: Any) -> None:
        """Use the model pool's own text tower when its vision towers come from another library.

        The heads must come from the CLIP the experts were fine-tuned against: an open_clip pool
        (``modelpool=openclip-vit-b32``) evaluated with ``taskpool=clip-vit-b32_TA8`` (whose
        ``clip_model`` is a Hugging Face CLIP) gets open_clip heads, projection and transforms;
        the report's task metadata names the text tower used. A pool of the same library keeps
        this task pool's ``clip_model``.
        """
        own = getattr(modelpool, "zero_shot_text_tower", None)
        if own is None:
            return
        tower = own()
        if tower.library == self.classifier.text_tower.library:
            return
        log.info(
            "taskpool: the model pool holds %s vision towers; zero-shot heads from its text "
            "tower %s instead of %s",
            tower.library,
            tower.description,
            self.clip_model,
        )
        self.clip_model = tower.description
        self.classifier = CLIPZeroShotClassifier(tower, self.tasks, self.head_cache_dir, "taskpool")

    # -- loading (delegated to the shared zero-shot classifier) ------------------------------
    def load_clip(self) -> tuple[nn.Module, Any]:
        """The CLIP model (without its vision tower) and tokenizer, loaded once."""
        return self.classifier.load_clip()

    def load_dataset(self, name: str) -> datasets.Dataset:
        """Split of task ``name``, opened once, with its columns and class count checked."""
        return self.classifier.load_dataset(name)

    def prepare(self) -> None:
        """Load CLIP and open every dataset now, so a bad location fails before a long fusion."""
        self.load_clip()
        for name in self.tasks:
            self.load_dataset(name)

    def zero_shot_head(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        """Head ``[num_classes, embed_dim]`` of task ``name`` from the disk cache or computed."""
        return self.classifier.zero_shot_head(name, device)

    def logits(
        self, model: nn.Module, pixel_values: torch.Tensor, head: torch.Tensor
    ) -> torch.Tensor:
        """Zero-shot logits ``[batch, classes]``; an ensemble averages its members' logits."""
        return self.classifier.logits(model, pixel_values, head)

    # -- evaluation ---------------------------------------------------------------------------
    def task_evaluation(self, name: str, model: nn.Module, device: torch.device) -> TaskEvaluation:
        """Top-1 accuracy (in [0, 1]) and mean cross-entropy of vision tower (or ensemble)
        ``model`` on task ``name``."""
        self.classifier.to(device)  # the text-side modules (projection, logit scale)
        t = self.classifier.task(name)
        data = self.classifier.task_data(name)
        head = self.zero_shot_head(name, device)
        model.to(device).eval()

        def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
            images, labels = batch
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            return classification_stats(self.logits(model, images, head), labels)

        return TaskEvaluation(
            data,
            step,
            lambda totals: classification_metrics(
                totals, f"task '{name}': the {t.split} split of '{t.dataset}' is empty"
            ),
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
