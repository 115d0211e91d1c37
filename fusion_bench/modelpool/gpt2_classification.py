"""Model pool of GPT-2 sequence-classification experts (``tanganke/gpt2_<task>``): backbones merge,
heads stay per task.

``_pretrained_`` is a ``GPT2Model`` location (``gpt2``); every expert is a
``GPT2ForSequenceClassification`` checkpoint whose backbone (``transformer``) is what methods
see and merge, and whose ``score`` head is kept as that task's head. Backbones come with
``nn.Linear`` layers in place of GPT-2's ``Conv1D`` (same function, transposed weight; see
:mod:`fusion_bench.models.sequence_classification`), and are saved back in GPT-2's own format.

Adapter for data-dependent methods: ``task_dataset`` gives ``[input_ids; attention_mask]`` of
the task's raw text (right-padded), ``task_logits`` the expert head of the task on the last real
token, ``mlp_names`` every ``h.<i>.mlp``, ``linear_names`` every (converted) linear layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.base import BaseModelPool
from fusion_bench.utils.hub import load_with_fallback

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fusion_bench.models.sequence_classification import ScoreHead
    from fusion_bench.tasks.glue_data import TextTaskConfig


class GPT2ClassificationPool(BaseModelPool):
    """GPT-2 backbones of ``_pretrained_`` and of sequence-classification experts.

    Args:
        models: ``name -> location``; experts are named after their task.
        validate: check keys / shapes / dtypes / finiteness of all backbones before any work.
        tokenizer: tokenizer location; ``None``: the ``_pretrained_`` location.
        tasks: ``task -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`): the data
            of data-dependent methods; ``None``: data-free methods only.
        max_length: inputs are truncated to this many tokens.
        cache_dir: tokenised-dataset cache; ``None``: ``<cache_dir()>/glue_tokenized``.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        validate: bool = True,
        tokenizer: str | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        max_length: int = 512,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(models, validate)
        from fusion_bench.tasks.glue_data import parse_text_tasks

        self.tokenizer_location = tokenizer
        self.tasks: dict[str, TextTaskConfig] = parse_text_tasks(tasks, "modelpool")
        self.max_length = int(max_length)
        if cache_dir is None:
            from fusion_bench.constants import cache_dir as root

            cache_dir = str(root() / "glue_tokenized")
        self.cache_dir = str(cache_dir)
        self._tokenizer = None
        self._heads: dict[str, ScoreHead] = {}

    # -- loading ------------------------------------------------------------------------------
    def _load(self, name: str, location: str) -> nn.Module:
        from transformers import GPT2Model

        from fusion_bench.models.sequence_classification import (
            ScoreHead,
            conv1d_to_linear,
            load_classifier,
        )

        hint = f"modelpool.models.{name}=/path/to/save_pretrained_dir"
        if name == PRETRAINED:
            backbone = load_with_fallback(
                GPT2Model.from_pretrained, location, what=f"model '{name}'", hint=hint
            )
        else:
            model = load_classifier(location, what=f"model '{name}'", hint=hint)
            if not hasattr(model, "transformer"):
                raise FusionBenchError(
                    f"model '{name}' ({location}) is a {type(model).__name__}, not a GPT-2 "
                    "sequence classifier (GPT2ForSequenceClassification)"
                )
            bias = None if model.score.bias is None else model.score.bias.detach()
            self._heads.setdefault(name, ScoreHead(model.score.weight.detach(), bias))
            backbone = model.transformer
        return conv1d_to_linear(backbone)

    def tokenizer(self) -> Any:
        """The tokenizer (padding with EOS if it has no pad token, as GPT-2's), loaded once."""
        if self._tokenizer is None:
            from fusion_bench.tasks.glue_data import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_location or self.location(PRETRAINED),
                hint="modelpool.tokenizer=/path/to/save_pretrained_dir",
                right_pad_with_eos=True,
            )
        return self._tokenizer

    def save_model(self, model: nn.Module, path: str) -> None:
        """``save_pretrained`` of the fused backbone in GPT-2's format, atomically.

        The backbone's linear layers become ``Conv1D`` again in place (the same function, so
        the model keeps working; no copy of it is made).
        """
        from fusion_bench.models.sequence_classification import linear_to_conv1d
        from fusion_bench.utils.io import save_pretrained_atomic

        save_pretrained_atomic(linear_to_conv1d(model), path, self.tokenizer())

    # -- data and task outputs for data-dependent methods --------------------------------------
    def _task(self, task: str) -> TextTaskConfig:
        if task not in self.tasks:
            raise FusionBenchError(
                f"model pool has no data for task '{task}'; add "
                f"modelpool.tasks.{task}.dataset=<location> (see config/modelpool/gpt2_glue.yaml)"
            )
        return self.tasks[task]

    def head(self, task: str) -> ScoreHead:
        """The classification head of the expert named ``task``."""
        if task not in self._heads:
            if task not in self.names:
                raise FusionBenchError(
                    f"no expert named '{task}' in the model pool, so no head for that task"
                )
            self.load_model(task)
        return self._heads[task]

    def task_dataset(self, task: str, split: str = "train"):
        """``(inputs [2, length], label)`` pairs of ``task``'s train / validation / test split."""
        from fusion_bench.tasks.glue_data import (
            PaddedTextDataset,
            load_text_split,
            tokenize_classification,
        )

        cfg = self._task(task)
        tok = self.tokenizer()
        ds = load_text_split(cfg, cfg.split_for(split), "modelpool")
        ds = tokenize_classification(
            ds, cfg, tok, max_length=self.max_length, cache_dir=self.cache_dir
        )
        return PaddedTextDataset(ds, tok.pad_token_id, cfg.label_column)

    def task_logits(self, model: nn.Module, task: str, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_labels]`` of ``task``'s expert head on backbone ``model``."""
        from fusion_bench.models.sequence_classification import last_token_logits

        return last_token_logits(model, self.head(task), inputs[:, 0], inputs[:, 1])

    def backbone_call(self, model, inputs: torch.Tensor):
        """The backbone on ``[B, 2, L]`` inputs (token ids, attention mask)."""
        return model(input_ids=inputs[:, 0], attention_mask=inputs[:, 1])

    def mlp_names(self, model: nn.Module) -> list[str]:
        """The MLP of every Transformer block (``h.<i>.mlp``)."""
        names = [n for n, _ in model.named_modules() if n.endswith(".mlp")]
        if not names:
            raise FusionBenchError(f"{type(model).__name__} has no GPT-2 MLP blocks (h.<i>.mlp)")
        return names
