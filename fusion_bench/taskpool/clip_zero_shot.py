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
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import BaseTaskPool
from fusion_bench.zero_shot.classifier import CLIPZeroShotClassifier
from fusion_bench.zero_shot.tasks import ImageTask, parse_task, plain

if TYPE_CHECKING:
    import datasets
    import torch
    from lightning.fabric import Fabric
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
        tasks = plain(tasks)
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
            str(n): parse_task(str(n), plain(c), f"taskpool.tasks.{n}") for n, c in tasks.items()
        }
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
            out[name] = {"version": t.version, "dataset": t.dataset, "split": t.split}
            if t.subset is not None:
                out[name]["subset"] = t.subset
        return out

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
    def evaluate_task(
        self, name: str, model: nn.Module, device: torch.device, fabric: Fabric | None
    ) -> dict[str, float]:
        """Top-1 accuracy (in [0, 1]) and mean cross-entropy of vision tower (or ensemble)
        ``model`` on task ``name``."""
        import torch
        import torch.nn.functional as F
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        self.classifier.to(device)  # the text-side modules (projection, logit scale)
        t = self.classifier.task(name)
        data = self.classifier.task_data(name)
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
