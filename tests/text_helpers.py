"""Helpers of the text (GLUE / T5) tests: a byte-level T5-style tokenizer, tiny random T5s and
GLUE-shaped datasets, all built in memory or under a test's tmp dir."""

from __future__ import annotations

from pathlib import Path

# Two rows per task with GLUE's column names and label conventions.
ROWS = {
    "cola": [{"sentence": "the cat sat", "label": 1}, {"sentence": "cat the sat", "label": 0}],
    "sst2": [{"sentence": "a fine film", "label": 1}, {"sentence": "a dull film", "label": 0}],
    "mrpc": [
        {"sentence1": "he left", "sentence2": "he went away", "label": 1},
        {"sentence1": "he left", "sentence2": "she sang", "label": 0},
    ],
    "qqp": [
        {"question1": "why rain?", "question2": "why does it rain?", "label": 1},
        {"question1": "why rain?", "question2": "who won?", "label": 0},
    ],
    "stsb": [
        {"sentence1": "a dog runs", "sentence2": "a dog runs", "label": 5.0},
        {"sentence1": "a dog runs", "sentence2": "rain falls", "label": 0.4},
    ],
    "mnli": [
        {"premise": "all cats nap", "hypothesis": "cats nap", "label": 0},
        {"premise": "all cats nap", "hypothesis": "cats eat", "label": 1},
        {"premise": "all cats nap", "hypothesis": "no cat naps", "label": 2},
    ],
    "qnli": [
        {"question": "who sang?", "sentence": "Ann sang.", "label": 0},
        {"question": "who sang?", "sentence": "It rained.", "label": 1},
    ],
    "rte": [
        {"sentence1": "Bo owns a car.", "sentence2": "Bo has a car.", "label": 0},
        {"sentence1": "Bo owns a car.", "sentence2": "Bo has no car.", "label": 1},
    ],
}


def byte_tokenizer():
    """A T5-style fast tokenizer over single byte-level characters (pad 0, ``</s>`` 1, unk 2,
    ``</s>`` appended): it tokenises any text and decodes back to the same string."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_t5(vocab_size: int, seed: int = 0):
    """A random ``T5ForConditionalGeneration`` (d_model 16, one layer each side)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(cfg).eval()


def save_glue_datasets(root: Path, tasks=tuple(ROWS)) -> dict[str, str]:
    """``save_to_disk`` DatasetDicts (train + the task's validation split) under ``root``."""
    from datasets import Dataset, DatasetDict

    from fusion_bench.tasks.glue import GLUE_TASKS

    out = {}
    for task in tasks:
        rows = ROWS[task]
        ds = Dataset.from_list([{**r, "idx": i} for i, r in enumerate(rows)])
        dd = DatasetDict({"train": ds, GLUE_TASKS[task].validation_split: ds})
        dd.save_to_disk(str(root / task))
        out[task] = str(root / task)
    return out


def t5_pool_dirs(root: Path, experts=("cola", "sst2")) -> tuple[str, dict[str, str]]:
    """A tiny pretrained T5 + tokenizer and perturbed full experts, saved with save_pretrained."""
    import torch

    tok = byte_tokenizer()
    base = tiny_t5(len(tok))
    base.save_pretrained(root / "pretrained")
    tok.save_pretrained(root / "pretrained")
    out = {}
    for i, name in enumerate(experts):
        expert = tiny_t5(len(tok))
        expert.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        expert.save_pretrained(root / name)
        out[name] = str(root / name)
    return str(root / "pretrained"), out


def tiny_gpt2_config(vocab_size: int, num_labels: int = 2):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=512,
        n_embd=16,
        n_layer=2,
        n_head=2,
        num_labels=num_labels,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )


def gpt2_pool_dirs(root: Path, experts=("cola", "mnli")) -> tuple[str, dict[str, str]]:
    """A tiny random GPT-2 backbone + tokenizer and sequence-classification experts (their
    backbones perturbed, heads random) saved with save_pretrained."""
    import torch
    from transformers import GPT2ForSequenceClassification, GPT2Model

    from fusion_bench.tasks.glue import GLUE_TASKS

    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = GPT2Model(tiny_gpt2_config(len(tok))).eval()
    base.save_pretrained(root / "pretrained")
    tok.save_pretrained(root / "pretrained")
    out = {}
    for i, name in enumerate(experts):
        torch.manual_seed(10 + i)
        expert = GPT2ForSequenceClassification(
            tiny_gpt2_config(len(tok), len(GLUE_TASKS[name].labels))
        )
        expert.transformer.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in expert.transformer.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        expert.save_pretrained(root / name)
        out[name] = str(root / name)
    return str(root / "pretrained"), out
