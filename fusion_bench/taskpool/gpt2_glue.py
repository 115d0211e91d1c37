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
    BaseTaskPool,
    TaskEvaluation,
    classification_metrics,
    classification_stats,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fusion_bench.models.sequence_classification import ScoreHead
    from fusion_bench.tasks.glue_data import TextTaskConfig


class GPT2GLUETaskPool(BaseTaskPool):
    """Accuracy of a GPT-2 backbone with each task's own classification head.

    Args:
        tokenizer: tokenizer location (``gpt2``, a ``save_pretrained`` dir or ``tiny-text://``).
        tasks: ``name -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`).
        heads: ``name -> location`` of the expert whose ``score`` head evaluates that task.
        batch_size: examples per batch.
        max_length: inputs are truncated to this many tokens.
        limit_batches: evaluate at most this many batches per task (smoke runs); ``None``: all.
        cache_dir: tokenised-dataset cache; ``None``: ``<cache_dir()>/glue_tokenized``.
        split: evaluate every task on this split role: ``None`` / ``"test"`` = each task's own
            ``split``; ``"validation"`` = its ``validation_split``, which GLUE tasks do not have
            by default (their validation split is the evaluation split): set one to tune.
    """

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
        from fusion_bench.tasks import with_split_role
        from fusion_bench.tasks.glue_data import parse_text_tasks

        self.split = split
        self.tasks: dict[str, TextTaskConfig] = with_split_role(
            parse_text_tasks(tasks, "taskpool"), split
        )
        if not self.tasks:
            raise FusionBenchError(
                "the task pool is empty: give at least one entry in taskpool.tasks"
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
        if min(batch_size, max_length) < 1 or (limit_batches is not None and limit_batches < 1):
            raise FusionBenchError(
                "taskpool needs batch_size, max_length >= 1 and limit_batches >= 1 or null"
            )
        self.tokenizer_location = str(tokenizer)
        self.heads = heads
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.limit_batches = limit_batches
        if cache_dir is None:
            from fusion_bench.constants import cache_dir as root

            cache_dir = str(root() / "glue_tokenized")
        self.cache_dir = str(cache_dir)
        self._tokenizer = None
        self._heads: dict[str, ScoreHead] = {}
        self._data: dict[str, Any] = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def metadata(self) -> dict[str, Any]:
        """``{task: {"version", "dataset", "subset", "split", "head"}}`` for the report."""
        return {
            n: {
                "version": t.version,
                "dataset": t.dataset,
                "subset": t.subset,
                "split": t.split,
                "head": self.heads[n],
            }
            for n, t in self.tasks.items()
        }

    # -- loading ------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        """The tokenizer (padding with EOS if it has none, on the right), loaded once."""
        if self._tokenizer is None:
            from fusion_bench.tasks.glue_data import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_location,
                hint="taskpool.tokenizer=/path/to/save_pretrained_dir",
                right_pad_with_eos=True,
            )
        return self._tokenizer

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

    def dataset(self, name: str):
        """Task ``name``'s evaluation split, tokenised (cached on disk)."""
        if name not in self._data:
            from fusion_bench.tasks.glue_data import load_text_split, tokenize_classification

            cfg = self.tasks[name]
            ds = load_text_split(cfg, cfg.split, "taskpool")
            if len(ds) == 0:
                raise FusionBenchError(
                    f"task '{name}': the {cfg.split} split of '{cfg.dataset}' is empty"
                )
            self._data[name] = tokenize_classification(
                ds, cfg, self.tokenizer(), max_length=self.max_length, cache_dir=self.cache_dir
            )
        return self._data[name]

    def prepare(self) -> None:
        """Load the tokenizer, heads and datasets now, so a bad location fails before fusing."""
        for name in self.tasks:
            self.dataset(name)
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
