"""Procedural English-like GLUE datasets: the 8 tasks of the tiny text benchmark.

Every task draws its sentences from one small shared lexicon (people, things, places, verbs with
synonyms and antonyms, sentiment adjectives, negation), so the tasks share words but ask
different questions about them, as GLUE's do. Rows have GLUE's exact column names, dtypes and
label conventions (those of the Hugging Face ``nyu-mll/glue`` dataset); the splits are ``train``
and ``validation`` (MNLI: ``train`` / ``validation_matched`` / ``validation_mismatched``, the
mismatched "genre" being past-tense narration where train and matched are present tense).

Each example also has a *kind*, the phenomenon it tests (e.g. SST-2 ``negated``, MNLI ``add``).
Some kinds are "hard": the shallow heuristic a model picks up from surface overlap gives the
wrong label on them (negation ignored, lexical overlap read as entailment, synonyms read as
different words -- the failure modes McCoy et al. document in "Right for the Wrong Reasons",
arXiv 1902.01007). :attr:`Example.heuristic_label` is the label that heuristic gives. The tiny
"Flan" pretraining is trained on those labels, so the pretrained model is competent on the easy
kinds and systematically wrong on the hard ones, and fine-tuning an expert on the true labels
closes the gap, as on the real benchmark.

Modules: :mod:`.lexicon` (the words), :mod:`.sentences` (events rendered as sentences, random
draws), :mod:`.glue_tasks` (one generator per task); this module ties them into datasets.

Everything is deterministic for a seed (``numpy.random.default_rng`` streams keyed by task,
split and seed through a stable CRC32, never Python's salted ``hash``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusion_bench.tinybench.text.glue_tasks import (
    COLA_HARD,
    COLA_KINDS,
    MNLI_HARD,
    MNLI_KINDS,
    MRPC_HARD,
    MRPC_KINDS,
    QNLI_HARD,
    QNLI_KINDS,
    QQP_HARD,
    QQP_KINDS,
    RTE_HARD,
    RTE_KINDS,
    SST2_HARD,
    SST2_KINDS,
    STSB_HARD,
    STSB_KINDS,
    generate_cola,
    generate_mnli,
    generate_mrpc,
    generate_qnli,
    generate_qqp,
    generate_rte,
    generate_sst2,
    generate_stsb,
)
from fusion_bench.tinybench.text.sentences import (
    Rng,
)

TASK_NAMES = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """Columns, label names (``None``: regression) and generator of one task."""

    columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    kinds: dict[str, float]
    hard_kinds: frozenset[str]
    generate: Callable[[Rng, str], tuple[dict, str, Any, Any]]
    splits: tuple[str, ...] = ("train", "validation")


SPECS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        ("sentence",),
        ("unacceptable", "acceptable"),
        COLA_KINDS,
        frozenset(COLA_HARD),
        generate_cola,
    ),
    "mnli": TaskSpec(
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        MNLI_KINDS,
        frozenset(MNLI_HARD),
        generate_mnli,
        ("train", "validation_matched", "validation_mismatched"),
    ),
    "mrpc": TaskSpec(
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        MRPC_KINDS,
        frozenset(MRPC_HARD),
        generate_mrpc,
    ),
    "qnli": TaskSpec(
        ("question", "sentence"),
        ("entailment", "not_entailment"),
        QNLI_KINDS,
        frozenset(QNLI_HARD),
        generate_qnli,
    ),
    "qqp": TaskSpec(
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        QQP_KINDS,
        frozenset(QQP_HARD),
        generate_qqp,
    ),
    "rte": TaskSpec(
        ("sentence1", "sentence2"),
        ("entailment", "not_entailment"),
        RTE_KINDS,
        frozenset(RTE_HARD),
        generate_rte,
    ),
    "sst2": TaskSpec(
        ("sentence",), ("negative", "positive"), SST2_KINDS, frozenset(SST2_HARD), generate_sst2
    ),
    "stsb": TaskSpec(
        ("sentence1", "sentence2"), None, STSB_KINDS, frozenset(STSB_HARD), generate_stsb
    ),
}
"""Every task's specification, in :data:`TASK_NAMES` order."""


@dataclass(frozen=True)
class Example:
    """One generated example.

    Attributes:
        row: the dataset row without ``idx`` (GLUE's text columns and ``label``).
        kind: the phenomenon it tests (a key of the task's ``kinds``).
        heuristic_label: the label a shallow surface heuristic gives; equals ``row["label"]``
            except on the task's hard kinds (see the module docstring).
    """

    row: dict
    kind: str
    heuristic_label: int | float


def _stream(task: str, split: str, seed: int) -> Rng:
    return Rng([seed, zlib.crc32(task.encode()), zlib.crc32(split.encode())])


def generate(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of ``task``'s ``split``, deterministic for ``(task, split, n, seed)``.

    Raises:
        KeyError: unknown task or split.
    """
    spec = SPECS[task]
    if split not in spec.splits:
        raise KeyError(f"task {task!r} has no split {split!r}; splits: {spec.splits}")
    genre = "mismatched" if split == "validation_mismatched" else "matched"
    r = _stream(task, split, seed)
    out = []
    for _ in range(n):
        text, kind, label, heuristic = spec.generate(r, genre)
        out.append(Example({**text, "label": label}, kind, heuristic))
    return out


def features(task: str):
    """``datasets.Features`` of ``task`` exactly as in ``nyu-mll/glue``."""
    import datasets

    spec = SPECS[task]
    cols = {c: datasets.Value("string") for c in spec.columns}
    if spec.label_names is None:
        cols["label"] = datasets.Value("float32")
    else:
        cols["label"] = datasets.ClassLabel(names=list(spec.label_names))
    cols["idx"] = datasets.Value("int32")
    return datasets.Features(cols)
