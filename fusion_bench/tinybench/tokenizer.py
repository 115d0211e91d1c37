"""Word-level tokenizer covering every prompt of the tiny benchmark.

A ``tokenizers`` ``WordLevel`` model (lower-casing, whitespace/punctuation pre-tokenizer)
wrapped in ``transformers.PreTrainedTokenizerFast``, so ``AutoTokenizer.from_pretrained(dir)``
loads it. Every prompt is ``<|startoftext|> words... <|endoftext|>``; the CLIP text tower pools
at the first ``<|endoftext|>`` (``text_config.eos_token_id = EOS_ID``, deliberately not 2, which
would select transformers' legacy arg-max pooling).
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MAX_LENGTH = 32


def all_prompts() -> list[str]:
    """Every ``template.format(classname)`` of every tiny task."""
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS

    return [t.format(c) for names, temps in TINY_TASKS.values() for c in names for t in temps]


def _backend(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)]
    )
    return tok


def build_tokenizer(texts: Iterable[str] | None = None):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is the words of ``texts`` (default: all
    prompts of the tiny tasks), in sorted order after the four special tokens."""
    from transformers import PreTrainedTokenizerFast

    texts = all_prompts() if texts is None else list(texts)
    probe = _backend({PAD: PAD_ID, UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID})
    words = set()
    for text in texts:
        norm = probe.normalizer.normalize_str(text)
        words.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(norm))
    vocab = {PAD: PAD_ID, UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID}
    for w in sorted(words - set(vocab)):
        vocab[w] = len(vocab)
    return PreTrainedTokenizerFast(
        tokenizer_object=_backend(vocab),
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )
