"""GLUE sequence classification with per-task heads: the task pool of the GPT-2 GLUE benchmark.

The model under evaluation is a GPT-2 backbone (``GPT2Model``, or anything mapping
``input_ids`` / ``attention_mask`` to ``last_hidden_state``). Each task takes the ``score`` head
of its own fine-tuned expert (``head``: a ``GPT2ForSequenceClassification`` location), applies it
to the backbone's hidden state of the last real token, and reports accuracy and mean
cross-entropy on the task's validation split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import (
    TaskEvaluation,
    classification_metrics,
    classification_stats,
)
from fusion_bench.taskpool.glue import GLUETaskPool

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

    from fusion_bench.models.sequence_classification import ScoreHead
    from fusion_bench.tasks.glue_data import TextTaskConfig


class GPT2GLUETaskPool(GLUETaskPool):
    """Accuracy of a GPT-2 backbone with each task's own classification head.

    Args:
        tokenizer: tokenizer location (``gpt2``, a ``save_pretrained`` dir or ``tiny-text://``).
        tasks: ``name -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`).
        heads: ``name -> location`` of the expert whose ``score`` head evaluates that task.
        batch_size: examples per batch.
        max_length: inputs are truncated to this many tokens.
        limit_batches, cache_dir, split: see :class:`~fusion_bench.taskpool.glue.GLUETaskPool`.
    """

    right_pad_with_eos = True

    def __init__(
        self,
        tokenizer: str,
        tasks: Mapping[str, Mapping[str, Any]],
        heads: Mapping[str, str],
        batch_size: int = 32,
        max_length: int = 512,
        limit_batches: int | None = None,
        cache_dir: str | None = None,
        split: str | None = None,
    ) -> None:
        super().__init__(
            tokenizer,
            tasks,
            batch_size=batch_size,
            limit_batches=limit_batches,
            cache_dir=cache_dir,
            split=split,
            lengths={"max_length": max_length},
        )
        heads = {str(k): str(v) for k, v in (heads or {}).items()}
        missing = [t for t in self.tasks if t not in heads]
        if missing:
            raise FusionBenchError(
                f"no classification head for task(s) {', '.join(missing)}: add "
                f"taskpool.heads.{missing[0]}=<GPT2ForSequenceClassification location>"
            )
        for name, cfg in self.tasks.items():
            if cfg.task.is_regression:
                raise FusionBenchError(
                    f"task '{name}' is a regression task; this task pool scores classification "
                    "accuracy only"
                )
        self.heads = heads
        self.max_length = int(max_length)
        self._heads: dict[str, ScoreHead] = {}

    def task_metadata(self, name: str) -> dict[str, Any]:
        return {"head": self.heads[name]}

    def head(self, name: str) -> ScoreHead:
        """Task ``name``'s classification head, loaded once."""
        if name not in self._heads:
            from fusion_bench.models.sequence_classification import load_score_head

            self._heads[name] = load_score_head(
                self.heads[name],
                what=f"classification head of task '{name}'",
                hint=f"taskpool.heads.{name}=/path/to/save_pretrained_dir",
            )
        return self._heads[name]

    def tokenize(self, ds: datasets.Dataset, cfg: TextTaskConfig) -> datasets.Dataset:
        """The raw text columns (:func:`~fusion_bench.tasks.glue_data.tokenize_classification`)."""
        from fusion_bench.tasks.glue_data import tokenize_classification

        return tokenize_classification(
            ds, cfg, self.tokenizer(), max_length=self.max_length, cache_dir=self.cache_dir
        )

    def prepare(self) -> None:
        """Load the tokenizer, heads and datasets now, so a bad location fails before fusing."""
        super().prepare()
        for name in self.tasks:
            self.head(name)

    # -- evaluation ---------------------------------------------------------------------------
    def task_evaluation(self, name: str, model: nn.Module, device: torch.device) -> TaskEvaluation:
        """Accuracy (in [0, 1]) and mean cross-entropy of backbone ``model`` on task ``name``."""
        import torch

        from fusion_bench.models.sequence_classification import last_token_logits

        cfg = self.tasks[name]
        tok = self.tokenizer()
        data = self.dataset(name).select_columns(["input_ids", cfg.label_column])

        def collate(rows: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            batch = tok.pad({"input_ids": [r["input_ids"] for r in rows]}, return_tensors="pt")
            return batch, torch.tensor([int(r[cfg.label_column]) for r in rows])

        head = self.head(name)
        model.to(device).eval()

        def step(batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
            inputs, labels = batch
            labels = labels.to(device, non_blocking=True)
            logits = last_token_logits(
                model,
                head,
                inputs["input_ids"].to(device, non_blocking=True),
                inputs["attention_mask"].to(device, non_blocking=True),
            )
            if logits.shape[-1] <= int(labels.max()):
                raise FusionBenchError(
                    f"task '{name}': the head has {logits.shape[-1]} classes but the data has "
                    f"label {int(labels.max())}; check taskpool.heads.{name}"
                )
            return classification_stats(logits, labels)

        return TaskEvaluation(
            data,
            step,
            lambda totals: classification_metrics(
                totals, f"task '{name}': nothing evaluated (empty split?)"
            ),
            collate_fn=collate,
        )
