"""GLUE as text-to-text generation: the task pool of the Flan-T5 GLUE benchmarks.

Every example is rendered into its task's prompt (:mod:`fusion_bench.tasks.glue`), the model
generates greedily up to ``max_new_tokens`` tokens, and the decoded text is scored: exact-match
accuracy for the classification tasks, Spearman's ρ for STS-B, unparsable outputs counting as
wrong. Each task reports its own metric, ``score`` (the same value, which the GLUE tables
average) and ``parsed`` (the fraction of outputs that were a valid answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import BaseTaskPool, TaskEvaluation
from fusion_bench.tasks.glue_data import (
    TextTaskConfig,
    load_text_split,
    parse_text_tasks,
    tokenize_seq2seq,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


class GLUETextGenerationTaskPool(BaseTaskPool):
    """Text-to-text GLUE evaluation of sequence-to-sequence models (``model.generate``).

    Args:
        tokenizer: location of the tokenizer (hub id such as ``google/flan-t5-base``, a
            ``save_pretrained`` dir or a ``tiny-text://`` location); normally the pretrained
            model's.
        tasks: ``name -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`).
        batch_size: prompts per generation batch.
        max_input_length: prompts are truncated to this many tokens.
        max_new_tokens: generation length limit (label words are one or two tokens).
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
        batch_size: int = 32,
        max_input_length: int = 512,
        max_new_tokens: int = 8,
        limit_batches: int | None = None,
        cache_dir: str | None = None,
        split: str | None = None,
    ) -> None:
        from fusion_bench.tasks import with_split_role

        self.split = split
        self.tasks: dict[str, TextTaskConfig] = with_split_role(
            parse_text_tasks(tasks, "taskpool"), split
        )
        if not self.tasks:
            raise FusionBenchError(
                "the task pool is empty: give at least one entry in taskpool.tasks"
            )
        if min(batch_size, max_input_length, max_new_tokens) < 1 or (
            limit_batches is not None and limit_batches < 1
        ):
            raise FusionBenchError(
                "taskpool needs batch_size, max_input_length, max_new_tokens >= 1 and "
                "limit_batches >= 1 or null"
            )
        self.tokenizer_location = str(tokenizer)
        self.batch_size = int(batch_size)
        self.max_input_length = int(max_input_length)
        self.max_new_tokens = int(max_new_tokens)
        self.limit_batches = limit_batches
        if cache_dir is None:
            from fusion_bench.constants import cache_dir as root

            cache_dir = str(root() / "glue_tokenized")
        self.cache_dir = str(cache_dir)
        self._tokenizer = None
        self._data: dict[str, Any] = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def metadata(self) -> dict[str, Any]:
        """``{task: {"version", "dataset", "split", "subset", "metric"}}`` for the report."""
        return {
            n: {
                "version": t.version,
                "dataset": t.dataset,
                "subset": t.subset,
                "split": t.split,
                "metric": t.task.metric,
            }
            for n, t in self.tasks.items()
        }

    # -- loading ------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        """The tokenizer, loaded once."""
        if self._tokenizer is None:
            from fusion_bench.tasks.glue_data import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_location, hint="taskpool.tokenizer=/path/to/save_pretrained_dir"
            )
        return self._tokenizer

    def dataset(self, name: str):
        """Task ``name``'s evaluation split, tokenised (cached on disk)."""
        if name not in self._data:
            cfg = self.tasks[name]
            ds = load_text_split(cfg, cfg.split, "taskpool")
            if len(ds) == 0:
                raise FusionBenchError(
                    f"task '{name}': the {cfg.split} split of '{cfg.dataset}' is empty"
                )
            self._data[name] = tokenize_seq2seq(
                ds,
                cfg,
                self.tokenizer(),
                max_length=self.max_input_length,
                cache_dir=self.cache_dir,
            )
        return self._data[name]

    def prepare(self) -> None:
        """Load the tokenizer and every dataset now, so a bad location fails before fusing."""
        for name in self.tasks:
            self.dataset(name)

    # -- evaluation ---------------------------------------------------------------------------
    def generate_texts(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> list[str]:
        """Greedy generation, decoded without special tokens."""
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        return self.tokenizer().batch_decode(out, skip_special_tokens=True)

    def task_evaluation(self, name: str, model: nn.Module, device: torch.device) -> TaskEvaluation:
        """Generate an answer to every prompt of task ``name``; score them all at the end
        (Spearman's rho needs every prediction, so the texts are gathered, not summed)."""

        from fusion_bench.tasks.glue import score

        if not hasattr(model, "generate"):
            raise FusionBenchError(
                f"{type(model).__name__} cannot generate text; the GLUE text-to-text task pool "
                "needs a sequence-to-sequence model (this method's output is not one)"
            )
        cfg = self.tasks[name]
        tok = self.tokenizer()
        data = self.dataset(name).select_columns(["input_ids", cfg.label_column])

        def collate(rows: list[dict]) -> tuple[dict[str, torch.Tensor], list]:
            batch = tok.pad({"input_ids": [r["input_ids"] for r in rows]}, return_tensors="pt")
            return batch, [r[cfg.label_column] for r in rows]

        model.to(device).eval()

        def step(batch: tuple[dict[str, torch.Tensor], list]) -> dict[str, Any]:
            inputs, gold = batch
            texts = self.generate_texts(
                model,
                inputs["input_ids"].to(device, non_blocking=True),
                inputs["attention_mask"].to(device, non_blocking=True),
            )
            return {"texts": texts, "labels": list(gold)}

        def metrics(totals: Mapping[str, Any]) -> dict[str, float]:
            labels = totals.get("labels", [])
            if len(labels) < 2:
                raise FusionBenchError(
                    f"task '{name}': {len(labels)} example(s) evaluated; need at least 2 (raise "
                    "taskpool.limit_batches or check the split)"
                )
            return score(cfg.task, totals["texts"], labels)

        return TaskEvaluation(data, step, metrics, collate_fn=collate)
