"""Tiny Flan-T5: the model, its "Flan" pretraining, full and LoRA fine-tuning, and evaluation.

* :func:`make_t5`: a randomly initialised ``T5ForConditionalGeneration`` shaped like Flan-T5
  (gated-GELU feed-forward, relative attention buckets, untied ``lm_head``), only tiny.
* :func:`pretrain`: the Flan analogue -- multi-task instruction tuning on the 8 tasks' train
  data, rendered with the GLUE prompt templates of :mod:`fusion_bench.tasks.glue`, with the
  *heuristic* labels of :mod:`fusion_bench.tinybench.text.data` as targets. The model learns the
  prompts, the label words and the easy cases; on each task's hard kinds it learns the
  heuristic's wrong answer.
* :func:`finetune`: one expert per task trained on the true labels with teacher forcing, either
  all weights (the ``tanganke/flan-t5-base_glue-<task>`` experts) or a PEFT LoRA adapter on the
  attention ``q`` / ``v`` projections (the ``..._lora-16`` experts).
* :func:`evaluate`: ``model.generate`` (greedy, ``max_new_tokens`` 6) + ``batch_decode`` +
  :func:`fusion_bench.tasks.glue.score`, the real evaluation path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch

from fusion_bench.tinybench.text import tokenizer as tk

MAX_NEW_TOKENS = 6


def make_t5(profile, vocab_size: int, seed: int):
    """A randomly initialised tiny ``T5ForConditionalGeneration`` (deterministic for ``seed``)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab_size,
        d_model=profile.d_model,
        d_kv=profile.d_model // profile.heads,
        d_ff=profile.d_ff,
        num_layers=profile.layers,
        num_decoder_layers=profile.layers,
        num_heads=profile.heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tk.PAD_ID,
        eos_token_id=tk.EOS_ID,
        decoder_start_token_id=tk.PAD_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        # tie_word_embeddings=False sets T5 v1.1 / Flan-T5 behaviour: no d_model**-0.5 rescaling
        # of the decoder output. transformers 5 nevertheless ties lm_head to the shared
        # embedding for every new T5 (real Flan-T5 checkpoints load untied only because their
        # two matrices differ), so this re-initialises the shared embedding: std 1 (the T5
        # default) gives logits of std ~sqrt(d_model), which stalled Adam for hundreds of steps.
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, profile.d_model**-0.5, generator=None)
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model


def encode(tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> list[tuple[list, list]]:
    """Token ids of ``(prompt, target)`` pairs, each ending with ``</s>``."""
    x = tokenizer(list(prompts), truncation=True)["input_ids"]
    y = tokenizer(list(targets))["input_ids"]
    return list(zip(x, y, strict=True))


def collate(pairs: Sequence[tuple[list, list]]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` and ``labels`` (padding = -100)."""
    n, m = max(len(x) for x, _ in pairs), max(len(y) for _, y in pairs)
    ids = torch.full((len(pairs), n), tk.PAD_ID, dtype=torch.long)
    labels = torch.full((len(pairs), m), -100, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
    return {"input_ids": ids, "attention_mask": (ids != tk.PAD_ID).long(), "labels": labels}


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_loop(
    model,
    pools: Mapping[str, Sequence[tuple[list, list]]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
    weight_decay: float = 0.0,
    progress=None,
) -> list[float]:
    """Teacher-forced training of ``model``'s trainable parameters in place.

    Each step draws one pool at random, weighted by its size, and a batch from it, so batches
    are task-homogeneous (less padding) while the mixture follows the data.

    Returns:
        The loss per step.
    """
    names = list(pools)
    sizes = torch.tensor([len(pools[k]) for k in names], dtype=torch.float)

    def sample(gen: torch.Generator) -> torch.Tensor:
        pool = pools[names[int(torch.multinomial(sizes, 1, generator=gen))]]
        idx = torch.randint(len(pool), (batch_size,), generator=gen).tolist()
        return model(**collate([pool[i] for i in idx])).loss

    return optimise(
        model, sample, steps=steps, lr=lr, weight_decay=weight_decay, gen=gen, progress=progress
    )


def optimise(
    model, sample, *, steps: int, lr: float, weight_decay: float, gen, progress, params=None
):
    """AdamW with warm-up + cosine schedule and grad-norm clipping 1.0 on ``params`` (default:
    ``model``'s trainable parameters), one ``sample(gen)`` loss per step; returns the losses."""
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    model.train()
    losses = []
    for _ in range(steps):
        loss = sample(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def pretrain(model, pools, profile, gen: torch.Generator, progress=None) -> list[float]:
    """Multi-task "Flan" pretraining of ``model`` in place on ``pools`` (task -> encoded pairs
    with heuristic targets)."""
    return train_loop(
        model,
        pools,
        steps=profile.pretrain_steps,
        batch_size=profile.batch_size,
        lr=profile.pretrain_lr,
        weight_decay=0.01,
        gen=gen,
        progress=progress,
    )


def finetune(model, pairs, profile, gen: torch.Generator, progress=None):
    """A fully fine-tuned copy of ``model`` (``model`` itself is unchanged)."""
    expert = copy.deepcopy(model).requires_grad_(True)
    train_loop(
        expert,
        {"task": pairs},
        steps=profile.finetune_steps,
        batch_size=profile.batch_size,
        lr=profile.finetune_lr,
        gen=gen,
        progress=progress,
    )
    return expert.requires_grad_(False)


def lora_config(profile):
    """The ``peft.LoraConfig`` of the LoRA experts (``q`` and ``v`` attention projections)."""
    from peft import LoraConfig

    return LoraConfig(
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        target_modules=["q", "v"],
        lora_dropout=0.0,
        bias="none",
        task_type="SEQ_2_SEQ_LM",
    )


def finetune_lora(model, pairs, profile, gen: torch.Generator, progress=None):
    """A ``peft.PeftModel`` with a LoRA adapter trained on ``pairs`` around a copy of ``model``."""
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):  # LoRA's A matrices are initialised randomly
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        peft_model = get_peft_model(copy.deepcopy(model), lora_config(profile))
    train_loop(
        peft_model,
        {"task": pairs},
        steps=profile.lora_steps,
        batch_size=profile.batch_size,
        lr=profile.lora_lr,
        gen=gen,
        progress=progress,
    )
    return peft_model.requires_grad_(False)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: Sequence[str], batch_size: int = 256) -> list[str]:
    """Greedy generations for ``prompts`` (decoded with ``skip_special_tokens``), in order."""
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        enc = tokenizer([prompts[i] for i in chunk], padding=True, return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        for i, text in zip(
            chunk, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True
        ):
            out[i] = text
    return out


def evaluate(model, tokenizer, task_name: str, rows: Sequence[Mapping]) -> dict[str, float]:
    """:func:`fusion_bench.tasks.glue.score` of ``model``'s generations on ``rows``."""
    from fusion_bench.tasks.glue import GLUE_TASKS, render_input, score

    task = GLUE_TASKS[task_name]
    texts = generate_texts(model, tokenizer, [render_input(task, r) for r in rows])
    return score(task, texts, [r["label"] for r in rows])
