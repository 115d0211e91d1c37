"""Model pool of sequence-to-sequence language models (Flan-T5) and their LoRA experts.

Locations are hub ids (``google/flan-t5-base``, ``tanganke/flan-t5-base_glue-cola``), local
``save_pretrained`` directories or ``tiny-text://`` locations of the offline tiny text benchmark.
With ``peft_experts: true`` every expert is a PEFT adapter (``adapter_config.json`` +
weights) on top of ``_pretrained_``: it is loaded with PEFT and merged into dense weights
(``W + scale * B A``, :meth:`peft.tuners.lora.LoraModel.merge_and_unload`), so every dense method
merges LoRA experts like full ones.

With ``peft_experts: linearized`` every expert is an L-LoRA expert (Tang et al., "Parameter
Efficient Multi-task Model Fusion with Partial Linearization", arXiv 2310.04742; format in
:mod:`fusion_bench.models.llora`: a PEFT adapter plus ``adapter_init.safetensors`` holding the
adapter's initial value ``phi_0``). Every model, ``_pretrained_`` included, loads as
``LinearizedModel(PeftModel(pretrained, adapter))`` (:mod:`fusion_bench.models.linearized`):
experts at their fine-tuned ``phi_i``, ``_pretrained_`` at ``phi_0`` (read from the first expert;
all experts must share ``phi_0`` and their LoRA config exactly). Their state dicts differ only in
``phi``, so a dense method such as task arithmetic yields ``phi_0 + lambda sum_i (phi_i - phi_0)``
(frozen weights and the stored ``phi_0`` have zero task vectors), and the merged model is
evaluated linearised (its ``generate`` decodes greedily without a KV cache).

Data-dependent methods see each GLUE task through this pool (the pool's adapter for T5):

- ``task_dataset(task, split)``: ``(inputs, label)`` with ``inputs = [input_ids; attention_mask]``
  (``[2, length]``) of the task's prompts, plus the verbalised label's ids and mask (``[4,
  length]``) on labelled splits (not ``test``);
- ``task_logits(model, task, inputs)``: the first decoding step's logits restricted to the first
  token of each label word (STS-B: of the scores 0.0 .. 5.0), the distribution the model's answer
  starts with;
- ``activation_forward``: teacher-forced forward on prompt and label (RegMean statistics);
- ``mlp_names``: every feed-forward block (``...DenseReluDense``) of encoder and decoder;
- ``linear_names``: every ``nn.Linear`` but the output head ``lm_head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.base import BaseModelPool
from fusion_bench.utils.hub import load_with_fallback, resolve_location

LINEARIZED = "linearized"
"""``peft_experts`` value of L-LoRA pools (every model loaded linearised)."""

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fusion_bench.tasks.glue_data import TextTaskConfig


class Seq2SeqLMPool(BaseModelPool):
    """``_pretrained_`` plus experts of ``AutoModelForSeq2SeqLM`` (full fine-tunes or LoRA).

    Args:
        models: ``name -> location``.
        validate: check keys / shapes / dtypes / finiteness of all models before any work.
        peft_experts: ``false``: full models; ``true``: experts are PEFT adapters of
            ``_pretrained_`` (merged into dense weights on load); ``"linearized"``: experts are
            L-LoRA adapters and every model loads linearised (see the module docstring).
        tokenizer: tokenizer location; ``None``: the ``_pretrained_`` location.
        tasks: ``task -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`): the data
            of data-dependent methods; ``None``: data-free methods only.
        max_input_length: prompts are truncated to this many tokens.
        cache_dir: tokenised-dataset cache; ``None``: ``<cache_dir()>/glue_tokenized``.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        validate: bool = True,
        peft_experts: bool | str = False,
        tokenizer: str | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        max_input_length: int = 512,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(models, validate)
        from fusion_bench.tasks.glue_data import parse_text_tasks

        if isinstance(peft_experts, str):
            if peft_experts.strip().lower() != LINEARIZED:
                raise FusionBenchError(
                    f"modelpool.peft_experts must be true, false or '{LINEARIZED}', "
                    f"got '{peft_experts}'"
                )
            peft_experts = LINEARIZED
        elif not isinstance(peft_experts, (bool, int)):
            raise FusionBenchError(
                f"modelpool.peft_experts must be true, false or '{LINEARIZED}', "
                f"got {peft_experts!r}"
            )
        if peft_experts and not self.has_pretrained:
            raise FusionBenchError(
                f"peft_experts: {str(peft_experts).lower()} needs the base model: add "
                "modelpool.models._pretrained_"
            )
        if peft_experts == LINEARIZED and not self.names:
            raise FusionBenchError(
                f"peft_experts: {LINEARIZED} needs at least one expert (the pretrained model is "
                "linearised around the experts' shared phi_0)"
            )
        self.peft_experts: bool | str = (
            LINEARIZED if peft_experts == LINEARIZED else bool(peft_experts)
        )
        self.tokenizer_location = tokenizer
        self.tasks: dict[str, TextTaskConfig] = parse_text_tasks(tasks, "modelpool")
        self.max_input_length = int(max_input_length)
        if cache_dir is None:
            from fusion_bench.constants import cache_dir as root

            cache_dir = str(root() / "glue_tokenized")
        self.cache_dir = str(cache_dir)
        self._tokenizer = None
        self._class_tokens: dict[str, list[int]] = {}
        self._decoder_start: int | None = None
        self._llora_ref: tuple[str, dict[str, Any], dict[str, torch.Tensor]] | None = None

    # -- loading ------------------------------------------------------------------------------
    def _load(self, name: str, location: str) -> nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        hint = f"modelpool.models.{name}=/path/to/save_pretrained_dir"
        if self.peft_experts == LINEARIZED:
            return self._load_linearized(name, location)
        if self.peft_experts and name != PRETRAINED:
            return self._load_adapter(name, location)
        path, is_local = resolve_location(location)
        if is_local and (Path(path) / "adapter_config.json").exists():
            raise FusionBenchError(
                f"model '{name}' ({location}) is a PEFT adapter, not a full model: set "
                "modelpool.peft_experts=true (e.g. modelpool=flan-t5-base_glue_lora16)"
            )
        return load_with_fallback(
            AutoModelForSeq2SeqLM.from_pretrained, location, what=f"model '{name}'", hint=hint
        )

    def _adapter_dir(self, name: str, location: str) -> str:
        """Local directory of expert ``name``'s adapter (from the HF cache or hub if remote)."""
        from huggingface_hub import snapshot_download

        path, is_local = resolve_location(location)
        if not is_local:  # the adapter repo's files, from the HF cache or the hub
            path = load_with_fallback(
                snapshot_download,
                location,
                what=f"adapter '{name}'",
                hint=f"modelpool.models.{name}=/path/to/adapter_dir",
            )
        if not (Path(path) / "adapter_config.json").exists():
            raise FusionBenchError(
                f"model '{name}' ({location}) has no adapter_config.json: with "
                f"modelpool.peft_experts={str(self.peft_experts).lower()} every expert must be a "
                "PEFT adapter directory"
            )
        return str(path)

    def _load_base(self) -> nn.Module:
        """The dense ``_pretrained_`` model, whatever ``peft_experts`` says."""
        from transformers import AutoModelForSeq2SeqLM

        return load_with_fallback(
            AutoModelForSeq2SeqLM.from_pretrained,
            self.location(PRETRAINED),
            what=f"model '{PRETRAINED}'",
            hint=f"modelpool.models.{PRETRAINED}=/path/to/save_pretrained_dir",
        )

    def _load_adapter(self, name: str, location: str) -> nn.Module:
        """The pretrained model with expert ``name``'s LoRA adapter merged into its weights."""
        from peft import PeftModel

        path = self._adapter_dir(name, location)
        base = self.load_pretrained()
        merged = PeftModel.from_pretrained(base, path).merge_and_unload()
        # PEFT froze the base weights; the merged model is a dense expert like a full one, whose
        # parameters data-dependent methods differentiate (Fisher merging)
        return merged.requires_grad_(True)

    def _llora_reference(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        """``(adapter dir, LoRA config, phi_0)`` of the first expert, read once."""
        from fusion_bench.models.llora import read_adapter_init, read_lora_config

        if self._llora_ref is None:
            first = self.names[0]
            path = self._adapter_dir(first, self.location(first))
            self._check_llora_dir(first, path)
            self._llora_ref = (path, read_lora_config(path), read_adapter_init(path))
        return self._llora_ref

    def _check_llora_dir(self, name: str, path: str) -> None:
        from fusion_bench.models.llora import ADAPTER_INIT, is_llora_expert

        if not is_llora_expert(path):
            raise FusionBenchError(
                f"expert '{name}' ({path}) is not an L-LoRA expert: {ADAPTER_INIT} (phi_0) is "
                "missing; with modelpool.peft_experts=linearized every expert must be saved by "
                "fusion_bench.models.llora.save_llora_expert"
            )

    def _load_linearized(self, name: str, location: str) -> nn.Module:
        """``LinearizedModel(PeftModel(pretrained, adapter))``: expert ``name`` at its ``phi``,
        or ``_pretrained_`` at the shared ``phi_0``."""
        import torch

        from fusion_bench.models.llora import load_llora_expert, read_adapter_init, read_lora_config

        ref_path, ref_cfg, ref_init = self._llora_reference()
        if name == PRETRAINED:
            return load_llora_expert(self._load_base(), ref_path, at_init=True)
        path = self._adapter_dir(name, location)
        self._check_llora_dir(name, path)
        if path != ref_path:
            cfg = read_lora_config(path)
            diff = next((k for k in ref_cfg if cfg[k] != ref_cfg[k]), None)
            if diff is not None:
                raise FusionBenchError(
                    f"L-LoRA expert '{name}' has {diff}={cfg[diff]!r} but '{self.names[0]}' has "
                    f"{ref_cfg[diff]!r}: linearised experts must share their LoRA config"
                )
            init = read_adapter_init(path)
            key = next(
                (
                    k
                    for k in sorted(set(init) | set(ref_init))
                    if k not in init
                    or k not in ref_init
                    or init[k].shape != ref_init[k].shape
                    or not torch.equal(init[k], ref_init[k])
                ),
                None,
            )
            if key is not None:
                raise FusionBenchError(
                    f"L-LoRA expert '{name}' does not share phi_0 with '{self.names[0]}' (first "
                    f"difference at '{key}'): experts must be fine-tuned from one adapter "
                    "initialisation"
                )
        return load_llora_expert(self._load_base(), path)

    def tokenizer(self) -> Any:
        """The tokenizer (``tokenizer`` location, else the pretrained model's), loaded once."""
        if self._tokenizer is None:
            from fusion_bench.tasks.glue_data import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_location or self.location(PRETRAINED),
                hint="modelpool.tokenizer=/path/to/save_pretrained_dir",
            )
        return self._tokenizer

    def save_model(self, model: nn.Module, path: str) -> None:
        """``save_pretrained`` of the fused model plus the tokenizer, atomically; a linearised
        (L-LoRA) model is saved in the L-LoRA expert format (adapter + ``phi_0``)."""
        from fusion_bench.models.linearized import LinearizedModel

        if isinstance(model, LinearizedModel):
            from fusion_bench.models.llora import save_llora_expert

            save_llora_expert(model, path, self.tokenizer())
            return
        from fusion_bench.utils.io import save_pretrained_atomic

        save_pretrained_atomic(model, path, self.tokenizer())

    # -- data and task outputs for data-dependent methods --------------------------------------
    def _task(self, task: str) -> TextTaskConfig:
        if not self.tasks:
            raise FusionBenchError(
                "this method needs task data but the model pool has none; add "
                "modelpool.tasks.<task>.dataset=<location> (see config/modelpool/*.yaml)"
            )
        if task not in self.tasks:
            raise FusionBenchError(
                f"model pool has no data for task '{task}'; tasks: {', '.join(self.tasks)}"
            )
        return self.tasks[task]

    def task_dataset(self, task: str, split: str = "train"):
        """``(inputs [2, length], label)`` pairs of ``task``'s train / validation / test split."""
        from fusion_bench.tasks.glue_data import (
            PaddedTextDataset,
            load_text_split,
            tokenize_seq2seq,
        )

        cfg = self._task(task)
        ds = load_text_split(cfg, cfg.split_for(split), "modelpool")
        tok = self.tokenizer()
        ds = tokenize_seq2seq(
            ds, cfg, tok, max_length=self.max_input_length, cache_dir=self.cache_dir
        )
        # labelled splits carry the targets (teacher-forced activation statistics); the test
        # split, used unlabelled by test-time methods, does not
        targets = split != "test"
        return PaddedTextDataset(ds, tok.pad_token_id, cfg.label_column, targets=targets)

    def class_token_ids(self, task: str) -> list[int]:
        """First token id of each class's target text (STS-B: of the scores 0.0 .. 5.0)."""
        if task not in self._class_tokens:
            from fusion_bench.tasks.glue import render_target

            glue = self._task(task).task
            n = 6 if glue.is_regression else len(glue.labels)
            targets = [render_target(glue, i) for i in range(n)]
            tok = self.tokenizer()
            ids = [tok(t, add_special_tokens=False)["input_ids"][0] for t in targets]
            if len(set(ids)) != len(ids):
                raise FusionBenchError(
                    f"task '{task}': the label words {targets} do not start with distinct "
                    "tokens, so the first decoding step cannot tell them apart"
                )
            self._class_tokens[task] = ids
        return self._class_tokens[task]

    def decoder_start_token_id(self) -> int:
        """The pretrained model's ``decoder_start_token_id`` (read from its config once), so
        that wrappers without a ``config`` (e.g. AdaMerging's merged model) work too."""
        if self._decoder_start is None:
            from transformers import AutoConfig

            location = self.location(PRETRAINED if self.has_pretrained else self.names[0])
            config = load_with_fallback(
                AutoConfig.from_pretrained,
                location,
                what="model config",
                hint="modelpool.models._pretrained_=/path/to/save_pretrained_dir",
            )
            if config.decoder_start_token_id is None:
                raise FusionBenchError(f"the config of '{location}' has no decoder_start_token_id")
            self._decoder_start = int(config.decoder_start_token_id)
        return self._decoder_start

    def task_logits(self, model: nn.Module, task: str, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, classes]`` of the first decoded token over the task's label words."""
        import torch

        ids, mask = inputs[:, 0], inputs[:, 1]
        start = self.decoder_start_token_id()
        decoder_ids = torch.full((ids.shape[0], 1), start, dtype=torch.long, device=ids.device)
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        index = torch.tensor(self.class_token_ids(task), device=ids.device)
        return out.logits[:, 0, :].index_select(-1, index)

    def activation_forward(self, model: nn.Module, task: str, inputs: torch.Tensor) -> Any:
        """Teacher-forced forward on the prompt and its verbalised label (as in fine-tuning and
        in RegMean's seq2seq statistics): the decoder runs on ``[start] + target[:-1]``, so its
        layers see every target position, not only the identical first step. Inputs without
        target rows (test split) fall back to :meth:`task_logits`."""
        import torch

        if inputs.shape[1] < 4:
            return self.task_logits(model, task, inputs)
        ids, mask, target, target_mask = inputs.unbind(1)
        start = torch.full_like(target[:, :1], self.decoder_start_token_id())
        decoder_ids = torch.cat([start, target[:, :-1]], dim=1)
        decoder_mask = torch.cat([torch.ones_like(start), target_mask[:, :-1]], dim=1)
        return model(
            input_ids=ids,
            attention_mask=mask,
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask,
        ).logits

    def embedding_names(self, model: nn.Module) -> list[str]:
        """None: T5's token embedding is one module reached under several names (``shared``,
        ``encoder.embed_tokens``, ``decoder.embed_tokens``), so replacing it under one name would
        not reach the others, and its relative-position biases are indexed by position pairs,
        not by sample. Embeddings stay at their merged values."""
        return []

    def backbone_call(self, model, inputs):
        """The model on the prompts of ``[B, 2|4, L]`` inputs (token ids, attention mask[,
        target ids, target mask]); a per-input router reads the encoder's side of it."""
        return model(input_ids=inputs[:, 0], attention_mask=inputs[:, 1])

    def mlp_names(self, model: nn.Module) -> list[str]:
        """The feed-forward block of every encoder and decoder layer."""
        names = [n for n, _ in model.named_modules() if n.endswith(".DenseReluDense")]
        if not names:
            raise FusionBenchError(
                f"{type(model).__name__} has no T5 feed-forward blocks (*.DenseReluDense)"
            )
        return names

    def linear_names(self, model: nn.Module) -> list[str]:
        """Every ``nn.Linear`` except the output head ``lm_head``."""
        return [n for n in super().linear_names(model) if n.split(".")[-1] != "lm_head"]
