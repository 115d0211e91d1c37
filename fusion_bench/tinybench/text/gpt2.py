"""Tiny GPT-2: tokenizer, causal-LM pretraining and sequence-classification experts.

The real GPT-2 GLUE benchmark is ``gpt2`` (a ``GPT2Model``) with one fully fine-tuned
``GPT2ForSequenceClassification`` per task (``tanganke/gpt2_<task>``, 7 tasks: no STS-B), fed
the task's raw text columns (no prompt; a sentence pair is the two texts concatenated, as GPT-2's
tokenizer does it) and classifying from the hidden state of the last real token. Here:

* :func:`build_tokenizer`: a GPT-2-style word-level tokenizer over the same words as the T5 one
  (:func:`fusion_bench.tinybench.text.tokenizer.vocabulary_texts`): ``<|endoftext|>`` is its only
  special token (bos = eos = unk, id 0), it has **no pad token** and **no post-processor** (nothing
  is appended; a pair is the concatenation of its two texts), like ``gpt2``'s. The pools' GPT-2
  code paths (pad with EOS, right padding, last-token pooling) therefore run as on the real
  checkpoints. Reusing the T5 tokenizer would append ``</s>`` after every text (always pooling on
  the same token) and bring a pad token GPT-2 does not have, so it is not used.
* :func:`make_gpt2` / :func:`pretrain`: a tiny ``GPT2LMHeadModel`` trained with GPT-2's own
  objective, next-token prediction, on the union of the tasks' training texts (each example's
  text columns as :func:`encode_classification` joins them, then ``<|endoftext|>``); the
  ``transformer`` (a ``GPT2Model``) is what the build saves.
* :func:`finetune`: one ``GPT2ForSequenceClassification`` per task initialised from it (random
  ``score`` head, ``config.pad_token_id`` = EOS), all weights trained on the true labels with
  exactly the inputs :func:`fusion_bench.tasks.glue_data.tokenize_classification` produces.
* :func:`evaluate`: validation accuracy of the classifier, pooled as the task pool pools.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from fusion_bench.tinybench.text import tokenizer as t5tk
from fusion_bench.tinybench.text.train import optimise

EOT = "<|endoftext|>"
EOT_ID = 0


def build_tokenizer():
    """The GPT-2-style word-level tokenizer (see the module docstring)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    t5 = t5tk.build_tokenizer()
    words = [w for w in t5.get_vocab() if w not in (t5tk.PAD, t5tk.EOS, t5tk.UNK)]
    vocab = {EOT: EOT_ID}
    for w in sorted(words):
        vocab[w] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=EOT))
    backend.normalizer = t5.backend_tokenizer.normalizer
    backend.pre_tokenizer = t5.backend_tokenizer.pre_tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=t5tk.MAX_LENGTH,
        padding_side="right",
    )


def make_gpt2(profile, vocab_size: int, seed: int):
    """A randomly initialised tiny ``GPT2LMHeadModel`` (deterministic for ``seed``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=t5tk.MAX_LENGTH,
        n_embd=profile.gpt2_n_embd,
        n_layer=profile.gpt2_layers,
        n_head=profile.gpt2_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def encode_classification(tokenizer, task: str, rows: Sequence[Mapping]) -> list[list[int]]:
    """Token ids of ``rows`` exactly as :func:`~fusion_bench.tasks.glue_data.tokenize_classification`
    makes them (the task's raw text columns through ``tokenizer(*columns)``), via that function."""
    import datasets

    from fusion_bench.tasks.glue_data import parse_text_task, tokenize_classification

    cfg = parse_text_task(task, {"dataset": "tiny", "metadata": {"version": 1}}, "tinybench")
    cols = {c: [r[c] for r in rows] for c in cfg.task.text_columns}
    cols["label"] = [r["label"] for r in rows]
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        ds = tokenize_classification(
            datasets.Dataset.from_dict(cols),
            cfg,
            tokenizer,
            max_length=t5tk.MAX_LENGTH,
            cache_dir=None,
        )
    finally:
        if bars_were_on:
            datasets.utils.enable_progress_bars()
    return list(ds["input_ids"])


def _pad(seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` (padding: EOS, as the pools pad) and ``attention_mask``."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), EOT_ID, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def pretrain(model, docs: Sequence[list[int]], profile, gen: torch.Generator, progress=None):
    """Causal-LM pretraining of ``model`` in place on ``docs`` (token ids, each ending with
    ``<|endoftext|>``); returns the loss per step."""

    def sample(g):
        idx = torch.randint(len(docs), (profile.batch_size,), generator=g).tolist()
        ids, mask = _pad([docs[i] for i in idx])
        labels = ids.masked_fill(mask == 0, -100)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    return optimise(
        model,
        sample,
        steps=profile.gpt2_pretrain_steps,
        lr=profile.gpt2_pretrain_lr,
        weight_decay=0.01,
        gen=gen,
        progress=progress,
    )


def finetune(backbone, num_labels: int, inputs, labels, profile, gen, progress=None):
    """A ``GPT2ForSequenceClassification`` around a copy of ``backbone`` (a ``GPT2Model``),
    all weights trained on ``inputs`` (token id lists) / ``labels``; ``backbone`` is unchanged."""
    from transformers import GPT2ForSequenceClassification

    config = copy.deepcopy(backbone.config)
    config.num_labels = num_labels
    config.pad_token_id = EOT_ID
    config.architectures = ["GPT2ForSequenceClassification"]
    with torch.random.fork_rng(devices=[]):  # the score head is initialised randomly
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        model = GPT2ForSequenceClassification(config)
    model.transformer.load_state_dict(backbone.state_dict())
    model.requires_grad_(True)
    y = torch.as_tensor(labels, dtype=torch.long)

    def sample(g):
        idx = torch.randint(len(inputs), (profile.batch_size,), generator=g).tolist()
        ids, mask = _pad([inputs[i] for i in idx])
        return model(input_ids=ids, attention_mask=mask, labels=y[idx]).loss

    optimise(
        model,
        sample,
        steps=profile.gpt2_finetune_steps,
        lr=profile.gpt2_finetune_lr,
        weight_decay=0.0,
        gen=gen,
        progress=progress,
    )
    return model.requires_grad_(False)


@torch.inference_mode()
def evaluate(model, inputs, labels, batch_size: int = 256) -> float:
    """Accuracy of a ``GPT2ForSequenceClassification`` on ``inputs`` / ``labels``."""
    model.eval()
    correct = 0
    for s in range(0, len(inputs), batch_size):
        ids, mask = _pad(inputs[s : s + batch_size])
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        correct += int((pred == torch.as_tensor(labels[s : s + batch_size])).sum())
    return correct / len(inputs)
