"""LoRA and linearised-LoRA (L-LoRA) fine-tuning of text-to-text sequence-to-sequence models.

Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial Linearization",
arXiv 2310.04742. Both families train a LoRA adapter ``phi`` (``W + (alpha / r) B A`` on the
target projections) of a frozen pretrained model on a task's prompts -> verbalised labels, with
teacher forcing and the token cross-entropy of the target (its ``</s>`` included):

* LoRA: the loss of ``f(x; phi)``;
* L-LoRA: the loss of the linearised model
  ``f_lin(x; phi) = f(x; phi_0) + J_phi f(x; phi_0) (phi - phi_0)``
  (:class:`fusion_bench.models.linearized.LinearizedModel`); ``phi_0`` is the adapter's
  initialisation and stays fixed. The logits are linearised and the loss is computed from them;
  no ``labels`` are passed to the HF model, whose internal loss would be linearised too.

``phi_0`` depends only on ``seed`` and the architecture: experts of several tasks fine-tuned with
one seed share it, as task arithmetic over linearised adapters requires, and a LoRA and an L-LoRA
expert of one seed start from the same point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    import datasets
    from lightning.fabric import Fabric

    from fusion_bench.tasks.glue_data import TextTaskConfig


def lora_config(rank: int, alpha: float, target_modules: Sequence[str] = ("q", "v")) -> Any:
    """The ``peft.LoraConfig`` of the experts: no dropout, no bias, PEFT's default init
    (``A`` random, ``B = 0``, so ``phi_0`` leaves the pretrained model unchanged)."""
    from peft import LoraConfig

    return LoraConfig(
        r=int(rank),
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="SEQ_2_SEQ_LM",
    )


def seq2seq_batch(
    rows: Sequence[dict[str, Any]], pad_token_id: int, decoder_start_token_id: int
) -> dict[str, torch.Tensor]:
    """Teacher-forcing batch of tokenised rows (``input_ids``, ``target_ids``).

    Returns:
        ``input_ids`` / ``attention_mask`` (prompts, right-padded), ``decoder_input_ids`` (the
        targets shifted right behind the decoder start token, padded with ``pad_token_id``) and
        ``labels`` (the targets, padded with -100).
    """
    n = max(len(r["input_ids"]) for r in rows)
    m = max(len(r["target_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    dec = torch.full((len(rows), m), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), m), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        x, y = list(r["input_ids"]), list(r["target_ids"])
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
        labels[i, : len(y)] = torch.tensor(y)
        dec[i, 0] = decoder_start_token_id
        dec[i, 1 : len(y)] = torch.tensor(y[:-1], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "labels": labels}


def _tokenized(
    train_dataset: Any,
    task_cfg: TextTaskConfig,
    tokenizer: Any,
    max_input_length: int,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    """``train_dataset`` with ``input_ids`` / ``target_ids`` (tokenised here unless present)."""
    from fusion_bench.tasks.glue_data import tokenize_seq2seq

    columns = getattr(train_dataset, "column_names", None)
    if columns is None:
        raise FusionBenchError(
            f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}"
        )
    if {"input_ids", "target_ids"} <= set(columns):
        return train_dataset.select_columns(["input_ids", "target_ids"])
    ds = tokenize_seq2seq(
        train_dataset, task_cfg, tokenizer, max_length=max_input_length, cache_dir=cache_dir
    )
    return ds.select_columns(["input_ids", "target_ids"])


def finetune_lora(
    model: nn.Module,
    tokenizer: Any,
    train_dataset: datasets.Dataset,
    *,
    task_cfg: TextTaskConfig,
    linearized: bool,
    steps: int,
    batch_size: int,
    lr: float,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] = ("q", "v"),
    seed: int,
    fabric: Fabric | None = None,
    max_input_length: int = 512,
    max_grad_norm: float | None = 1.0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> nn.Module:
    """Fine-tune a LoRA (or L-LoRA) adapter of ``model`` on one text-to-text task.

    Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial Linearization",
    arXiv 2310.04742 (see the module docstring for the two objectives). Batches are drawn
    without replacement from a shuffled order (reshuffled every epoch) by a generator seeded with
    ``seed``; Adam at a constant ``lr``, gradients clipped to ``max_grad_norm``. Runs on
    ``fabric``'s device (and precision) when given, else on the model's device.

    Args:
        model: the pretrained seq2seq model (e.g. ``T5ForConditionalGeneration``); LoRA layers
            are injected into it in place and its own weights are frozen, so pass a fresh copy.
        tokenizer: the model's tokenizer (prompts and targets; ``pad_token_id``).
        train_dataset: the task's training split with its GLUE columns (tokenised here with
            :func:`fusion_bench.tasks.glue_data.tokenize_seq2seq`), or already holding
            ``input_ids`` and ``target_ids``.
        task_cfg: the task's text config (prompt template and label words).
        linearized: train the linearised model (L-LoRA) instead of the LoRA model.
        steps: optimisation steps.
        batch_size: examples per step.
        lr: Adam learning rate.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha`` (scale ``alpha / r``).
        target_modules: names of the adapted projections (T5: ``q``, ``k``, ``v``, ``o``, ...).
        seed: seeds ``phi_0`` (the adapter initialisation: equal seeds give equal ``phi_0``) and
            the data order.
        fabric: Lightning Fabric that places model and batches; ``None``: no Fabric.
        max_input_length: prompts are truncated to this many tokens.
        max_grad_norm: gradient-norm clipping; ``None``: none.
        cache_dir: tokenised-dataset cache (see :mod:`fusion_bench.tasks.glue_data`); ``None``:
            not cached.
        progress: show a progress bar with the running loss.

    Returns:
        The ``peft.PeftModel`` (``linearized=False``) or the ``LinearizedModel`` around it, in
        eval mode; its attribute ``train_losses`` lists the loss of every step.

    Raises:
        FusionBenchError: on non-positive ``steps`` / ``batch_size`` / ``rank``, an empty
            dataset, or a model without ``decoder_start_token_id``.
    """
    from peft import get_peft_model
    from tqdm.auto import tqdm

    from fusion_bench.models.linearized import LinearizedModel

    if min(steps, batch_size, rank) < 1:
        raise FusionBenchError("finetune_lora needs steps, batch_size and rank >= 1")
    start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
    if start is None:
        raise FusionBenchError(
            f"{type(model).__name__} has no config.decoder_start_token_id: finetune_lora trains "
            "encoder-decoder models"
        )
    data = _tokenized(train_dataset, task_cfg, tokenizer, max_input_length, cache_dir)
    if len(data) == 0:
        raise FusionBenchError(f"task '{task_cfg.name}': the training dataset is empty")
    pad = int(tokenizer.pad_token_id)
    rows = [
        {"input_ids": x, "target_ids": y}
        for x, y in zip(data["input_ids"], data["target_ids"], strict=True)
    ]

    model.requires_grad_(False)
    # phi_0 = f(seed): PEFT draws A from the global RNG, which is forked so the caller's stream
    # is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(rank, alpha, target_modules))
    trained: nn.Module = LinearizedModel(peft_model) if linearized else peft_model
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    if fabric is not None:
        module, optimizer = fabric.setup(trained, optimizer)
        device = fabric.device
        autocast = fabric.autocast
    else:
        module = trained
        device = next(iter(params)).device
        autocast = contextlib.nullcontext

    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    module.train()
    bar = tqdm(
        range(steps),
        desc=f"{'L-LoRA' if linearized else 'LoRA'} {task_cfg.name}",
        unit="step",
        leave=False,
        disable=not progress,
    )
    # Dropout of the wrapped model draws from the global RNG: seed it, in a fork so the
    # caller's stream is untouched, to make training a function of the seed.
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in bar:
            if len(order) < batch_size:
                order += torch.randperm(len(rows), generator=gen).tolist()
            idx, order = order[:batch_size], order[batch_size:]
            batch = seq2seq_batch([rows[i] for i in idx], pad, int(start))
            labels = batch.pop("labels").to(device)
            inputs = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                # No labels into the model: the loss is computed from the (linearised) logits.
                logits = module(**inputs, use_cache=False).logits
            loss = nn.functional.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100
            )
            optimizer.zero_grad(set_to_none=True)
            if fabric is not None:
                fabric.backward(loss)
                if max_grad_norm is not None:
                    fabric.clip_gradients(module, optimizer, max_norm=max_grad_norm)
            else:
                loss.backward()
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    trained.eval()
    trained.train_losses = losses
    return trained


def save_finetuned(model: nn.Module, path: str | Path, tokenizer: Any | None = None) -> None:
    """Save an expert returned by :func:`finetune_lora`, atomically.

    A ``LinearizedModel`` is saved in the L-LoRA expert format (PEFT adapter holding ``phi``
    plus ``adapter_init.safetensors`` holding ``phi_0``,
    :func:`fusion_bench.models.llora.save_llora_expert`; load it with
    ``Seq2SeqLMPool(peft_experts="linearized")``); a ``peft.PeftModel`` as a normal PEFT adapter
    directory (``Seq2SeqLMPool(peft_experts=True)``).

    Args:
        model: the fine-tuned expert.
        path: target directory (replaced if it exists).
        tokenizer: optionally saved alongside.
    """
    from fusion_bench.models.linearized import LinearizedModel
    from fusion_bench.models.llora import save_llora_expert, save_lora_expert

    if isinstance(model, LinearizedModel):
        save_llora_expert(model, path, tokenizer)
    else:
        save_lora_expert(model, path, tokenizer)


__all__ = ["finetune_lora", "lora_config", "save_finetuned", "seq2seq_batch"]
