"""GLUE as text-to-text tasks: prompt templates, label verbalisers, output parsing and scores.

Each task renders one example (a row of the GLUE dataset, with GLUE's column names) into an
input prompt and its label into a target word. The defaults are the prompts the published
Flan-T5 GLUE experts (``tanganke/flan-t5-*_glue-<task>``) were fine-tuned with, as given on their
model cards (the typos "Answere" are theirs and are kept: the experts learned those exact
strings). A task config may replace ``template`` / ``labels``; bump its ``metadata.version``
when it does, because tokenised caches and reports are keyed by it.

Scoring (Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", arXiv 1804.07461): exact-match accuracy of the generated label word for the seven
classification tasks; Spearman's rank correlation for STS-B, whose target is the similarity
score printed with one decimal. An output that does not parse (not one of the label words, or not
a number for STS-B) is wrong: for accuracy it never matches, for STS-B it is replaced by the end of
the 0..5 scale farthest from the gold score, so it can only lower the correlation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Any

from fusion_bench.errors import FusionBenchError

STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task in text-to-text form.

    Attributes:
        name: task name (``cola``, ``mnli``, ...), also the GLUE configuration name.
        text_columns: dataset columns the template reads, in order.
        template: ``str.format`` template over ``text_columns``.
        labels: verbalised label of each class id, in label order; ``None`` for regression
            (STS-B), whose target is ``f"{score:.1f}"``.
        validation_split: GLUE's validation split name for the task.
    """

    name: str
    text_columns: tuple[str, ...]
    template: str
    labels: tuple[str, ...] | None
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def metric(self) -> str:
        """Name of the task's score: ``accuracy`` or ``spearman``."""
        return "spearman" if self.is_regression else "accuracy"


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "cola",
        ("sentence",),
        "Indicate if the following sentence is grammatically correct or not: "
        "\"{sentence}\". Answere 'acceptable' or 'unacceptable'.",
        ("unacceptable", "acceptable"),
    ),
    "mnli": GlueTask(
        "mnli",
        ("premise", "hypothesis"),
        "Does the premise: '{premise}' logically imply, contradict, or is neutral to the "
        "hypothesis: '{hypothesis}'? Answere with 'entailment', 'contradiction', or 'neutral'.",
        ("entailment", "neutral", "contradiction"),
        validation_split="validation_matched",
    ),
    "mrpc": GlueTask(
        "mrpc",
        ("sentence1", "sentence2"),
        "Are the following sentences '{sentence1}' and '{sentence2}' conveying the same "
        "meaning? Answere with 'yes' or 'no'.",
        ("no", "yes"),
    ),
    "qnli": GlueTask(
        "qnli",
        ("question", "sentence"),
        "Given the context: '{sentence}', does the question '{question}' have an answer based "
        "on the information provided? Answer with 'yes' or 'no'.",
        ("yes", "no"),
    ),
    "qqp": GlueTask(
        "qqp",
        ("question1", "question2"),
        "Do the questions '{question1}' and '{question2}' have the same intent? Answere with "
        "'yes' or 'no'.",
        ("no", "yes"),
    ),
    "rte": GlueTask(
        "rte",
        ("sentence1", "sentence2"),
        "Does the text: '{sentence1}' entail that '{sentence2}' is true? Provide 'yes' or 'no'.",
        ("yes", "no"),
    ),
    "sst2": GlueTask(
        "sst2",
        ("sentence",),
        "Given the sentence '{sentence}', determine the sentiment. Is it positive or negative?",
        ("negative", "positive"),
    ),
    "stsb": GlueTask(
        "stsb",
        ("sentence1", "sentence2"),
        "Consider the sentences '{sentence1}' and '{sentence2}'. On a scale from 1 (completely "
        "different) to 5 (completely similar), rate the similarity.",
        None,
    ),
}


def get_glue_task(
    name: str, template: str | None = None, labels: Sequence[str] | None = None
) -> GlueTask:
    """The registry entry of ``name``, optionally with its template / label words replaced.

    Raises:
        FusionBenchError: unknown task, or a template naming columns the task does not have.
    """
    if name not in GLUE_TASKS:
        raise FusionBenchError(
            f"unknown GLUE task '{name}'; known: {', '.join(GLUE_TASKS)} (set text_task to one "
            "of them for a renamed task)"
        )
    base = GLUE_TASKS[name]
    task = GlueTask(
        base.name,
        base.text_columns,
        base.template if template is None else str(template),
        base.labels if labels is None else tuple(str(x) for x in labels),
        base.validation_split,
    )
    fields = {f for _, f, _, _ in Formatter().parse(task.template) if f}
    if not fields <= set(task.text_columns):
        raise FusionBenchError(
            f"GLUE task '{name}': template uses {sorted(fields - set(task.text_columns))}, but "
            f"the task's columns are {list(task.text_columns)}"
        )
    if task.labels is not None and base.labels is not None and len(task.labels) != len(base.labels):
        raise FusionBenchError(
            f"GLUE task '{name}': {len(task.labels)} label words given, the task has "
            f"{len(base.labels)} classes"
        )
    return task


def render_input(task: GlueTask, example: Mapping[str, Any]) -> str:
    """The prompt of one example (a dataset row with GLUE's column names)."""
    missing = [c for c in task.text_columns if c not in example]
    if missing:
        raise FusionBenchError(
            f"GLUE task '{task.name}': example has no column(s) {missing}; columns: "
            f"{sorted(example)}"
        )
    return task.template.format(**{c: example[c] for c in task.text_columns})


def render_target(task: GlueTask, label: float | int) -> str:
    """The target text of a label: its word, or the STS-B score with one decimal."""
    if task.is_regression:
        return f"{float(label):.1f}"
    label = int(label)
    if not 0 <= label < len(task.labels):
        raise FusionBenchError(f"GLUE task '{task.name}': label {label} is out of range")
    return task.labels[label]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split()).strip(" .'\"")


def parse_prediction(task: GlueTask, text: str) -> int | float | None:
    """The label id (classification) or score (STS-B) a generated text states, else ``None``.

    Classification outputs match a label word exactly after lower-casing and trimming spaces,
    quotes and a final full stop. STS-B outputs are a single number (spaces inside are ignored,
    so word-level tokenizers' ``"3 . 4"`` reads as 3.4).
    """
    if task.is_regression:
        compact = re.sub(r"\s+", "", text).strip("'\"")
        if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", compact):
            return None
        value = float(compact)
        return value if math.isfinite(value) else None
    words = [_normalise(w) for w in task.labels]
    said = _normalise(text)
    return words.index(said) if said in words else None


def accuracy(predictions: Sequence[int | None], labels: Sequence[int]) -> float:
    """Exact-match accuracy; ``None`` (unparsable) predictions count as wrong."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("no examples to score")
    return sum(
        p is not None and p == int(y) for p, y in zip(predictions, labels, strict=True)
    ) / len(labels)


def spearman(predictions: Sequence[float | None], labels: Sequence[float]) -> float:
    """Spearman's ρ between predicted and gold STS-B scores.

    An unparsable prediction (``None``) is replaced by the end of the scale farthest from its
    gold score. A constant prediction vector has no rank correlation and scores 0.
    """
    from scipy.stats import spearmanr

    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if len(labels) < 2:
        raise ValueError("Spearman's rho needs at least two examples")
    lo, hi = STSB_RANGE
    mid = (lo + hi) / 2
    filled = [
        p if p is not None else (lo if float(y) >= mid else hi)
        for p, y in zip(predictions, labels, strict=True)
    ]
    if len(set(filled)) == 1 or len({float(y) for y in labels}) == 1:
        return 0.0
    return float(spearmanr(filled, [float(y) for y in labels]).statistic)


def score(task: GlueTask, texts: Sequence[str], labels: Sequence[float | int]) -> dict[str, float]:
    """Score generated ``texts`` against gold ``labels``.

    Returns:
        ``{task.metric: value, "score": value, "parsed": fraction of parsable outputs}``;
        ``score`` is the task's own metric, the one GLUE tables average.
    """
    preds = [parse_prediction(task, t) for t in texts]
    value = spearman(preds, labels) if task.is_regression else accuracy(preds, labels)
    parsed = sum(p is not None for p in preds) / len(preds)
    return {task.metric: value, "score": value, "parsed": parsed}
