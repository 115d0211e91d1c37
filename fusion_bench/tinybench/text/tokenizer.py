"""T5-style word-level tokenizer covering every prompt and target of the tiny text benchmark.

A ``tokenizers`` ``WordLevel`` model (NFKC + lower-casing, ``Whitespace`` pre-tokenizer, which
splits ``\\w+`` runs from punctuation runs) wrapped in ``transformers.PreTrainedTokenizerFast``,
so ``AutoTokenizer.from_pretrained(dir)`` loads it. Special tokens follow T5: ``<pad>`` = 0
(also the decoder start token), ``</s>`` = 1 (appended to every sequence by the
post-processor), ``<unk>`` = 2. Decoding joins words with spaces: the STS-B target ``"3.4"``
tokenises as ``3 . 4`` and decodes as ``"3 . 4"``, which
:func:`fusion_bench.tasks.glue.parse_prediction` reads as 3.4.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from string import Formatter

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MAX_LENGTH = 128
"""``model_max_length``: every prompt of the benchmark is shorter (a test checks it)."""


def _backend(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    return tok


def template_texts() -> list[str]:
    """Every GLUE template with its fields filled by a word, or a word ending in ``.`` or ``?``.

    The benchmark's sentences are words separated by spaces that end with nothing, ``.`` or
    ``?``, so these fillings produce every punctuation run (``.'``, ``?'``, ``.".``...) a
    prompt can contain where a sentence meets its template.
    """
    from fusion_bench.tasks.glue import GLUE_TASKS

    out = []
    for task in GLUE_TASKS.values():
        fields = [f for _, f, _, _ in Formatter().parse(task.template) if f]
        for ends in itertools.product(("", ".", "?"), repeat=len(fields)):
            out.append(
                task.template.format(**{f: "word" + e for f, e in zip(fields, ends, strict=True)})
            )
    return out


def target_texts() -> list[str]:
    """Every target: label words of the classification tasks and STS-B scores ``0.0``..``5.0``."""
    from fusion_bench.tasks.glue import GLUE_TASKS

    words = [w for t in GLUE_TASKS.values() if t.labels for w in t.labels]
    return words + [f"{i / 10:.1f}" for i in range(51)]


def vocabulary_texts() -> list[str]:
    """Texts whose words make up the vocabulary: templates, targets and the data lexicon."""
    from fusion_bench.tinybench.text.lexicon import lexicon

    return template_texts() + target_texts() + [" ".join(lexicon())]


def build_tokenizer(texts: Iterable[str] | None = None):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is the words of ``texts``.

    Args:
        texts: texts to cover; default :func:`vocabulary_texts` (every prompt and target the
            benchmark can produce). The vocabulary is the three special tokens, then the
            pre-tokenised, lower-cased words in sorted order (deterministic).
    """
    from transformers import PreTrainedTokenizerFast

    texts = vocabulary_texts() if texts is None else list(texts)
    probe = _backend({PAD: PAD_ID, EOS: EOS_ID, UNK: UNK_ID})
    words: set[str] = set()
    for text in texts:
        norm = probe.normalizer.normalize_str(text)
        words.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(norm))
    vocab = {PAD: PAD_ID, EOS: EOS_ID, UNK: UNK_ID}
    for w in sorted(words - set(vocab)):
        vocab[w] = len(vocab)
    return PreTrainedTokenizerFast(
        tokenizer_object=_backend(vocab),
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )
