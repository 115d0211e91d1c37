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
from fusion_bench.taskpool.base import TaskEvaluation
from fusion_bench.taskpool.glue import GLUETaskPool
from fusion_bench.tasks.glue_data import tokenize_seq2seq

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

    from fusion_bench.tasks.glue_data import TextTaskConfig


class GLUETextGenerationTaskPool(GLUETaskPool):
    """Text-to-text GLUE evaluation of sequence-to-sequence models (``model.generate``).

    Args:
        tokenizer: location of the tokenizer (hub id such as ``google/flan-t5-base``, a
            ``save_pretrained`` dir or a ``tiny-text://`` location); normally the pretrained
            model's.
        tasks: ``name -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`).
        batch_size: prompts per generation batch.
        max_input_length: prompts are truncated to this many tokens.
        max_new_tokens: generation length limit (label words are one or two tokens).
        limit_batches, cache_dir, split: see :class:`~fusion_bench.taskpool.glue.GLUETaskPool`.
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
        super().__init__(
            tokenizer,
            tasks,
            batch_size=batch_size,
            limit_batches=limit_batches,
            cache_dir=cache_dir,
            split=split,
            lengths={"max_input_length": max_input_length, "max_new_tokens": max_new_tokens},
        )
        self.max_input_length = int(max_input_length)
        self.max_new_tokens = int(max_new_tokens)

    def task_metadata(self, name: str) -> dict[str, Any]:
        return {"metric": self.tasks[name].task.metric}

    def tokenize(self, ds: datasets.Dataset, cfg: TextTaskConfig) -> datasets.Dataset:
        """Prompts and verbalised labels (:func:`~fusion_bench.tasks.glue_data.tokenize_seq2seq`)."""
        return tokenize_seq2seq(
            ds, cfg, self.tokenizer(), max_length=self.max_input_length, cache_dir=self.cache_dir
        )

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
