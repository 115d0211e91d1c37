"""Published reference numbers (``fusion_bench/reference/*.csv``) and their link to our runs.

Each CSV holds one published table: a ``# comment`` line saying what it is and where it was
published, then ``Method,<task display names...>,Average`` (GPT-2: ``Avg.``) and one row per
published method, in percent; a cell may be empty. A published row is linked to our runs through
:data:`PUBLISHED_METHODS`: the method config name plus the hyperparameters the published number
used, so that e.g. GPT-2's "Task Arithmetic (λ=0.5)" is not compared with our default λ=0.3 run.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fusion_bench.tables import hyperparameters, method_name

TASK_NAMES: dict[str, str] = {
    # CLIP eight-task benchmark
    "SUN397": "sun397",
    "Cars": "stanford-cars",
    "RESISC45": "resisc45",
    "EuroSAT": "eurosat",
    "SVHN": "svhn",
    "GTSRB": "gtsrb",
    "MNIST": "mnist",
    "DTD": "dtd",
    # GLUE
    "CoLA": "cola",
    "MNLI": "mnli",
    "MRPC": "mrpc",
    "QNLI": "qnli",
    "QQP": "qqp",
    "RTE": "rte",
    "SST-2": "sst2",
    "STSB": "stsb",
}
"""Published task column name -> our task name."""

PUBLISHED_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "Pre-trained": ("dummy", {"model_name": "_pretrained_"}),
    "Fine-tuned (STL)": ("individual", {}),
    "Simple Ensemble": ("simple_ensemble", {}),
    "Simple Averaging": ("simple_average", {}),
    "Simple Average": ("simple_average", {}),
    "Fisher Merging": ("fisher_merging", {}),
    "RegMean": ("regmean", {"reduce_non_diagonal_ratio": 0.95}),
    "RegMean++": ("regmean_plusplus", {"reduce_non_diagonal_ratio": 0.95}),
    "Task Arithmetic (λ=0.3)": ("task_arithmetic", {"scaling_factor": 0.3}),
    "Task Arithmetic (λ=0.5)": ("task_arithmetic", {"scaling_factor": 0.5}),
    "Concrete Task Arithmetic (λ=0.3)": ("concrete_task_arithmetic", {"scaling_factor": 0.3}),
    "Ties-Merging (λ=0.3)": ("ties_merging", {"scaling_factor": 0.3}),
    "Ties-Merging (λ=0.6)": ("ties_merging", {"scaling_factor": 0.6}),
    "Task-wise AdaMerging (λ=0.3)": ("adamerging_task_wise", {"init_value": 0.3}),
    "Layer-wise AdaMerging (λ=0.3)": ("adamerging", {"init_value": 0.3}),
    "Concrete Layer-wise AdaMerging (λ=0.3)": ("concrete_adamerging", {"scaling_factor": 0.3}),
    "Weight-Ensembling MoE": ("weight_ensembling_moe", {"init_lambda": 0.3}),
    "Efficient Weight-Ensembling MoE (90%)": (
        "sparse_weight_ensembling_moe",
        {"init_lambda": 0.3, "tv_prune_ratio": 0.9},
    ),
    # The SMILE table also holds an L/14 row; only the B/32 rows share the table's model.
    "SMILE B/32 (gate_k=16, k=32)": ("smile_upscaling", {"gate_k": 16, "k": 32}),
    "SMILE B/32 (gate_k=16, k=128)": ("smile_upscaling", {"gate_k": 16, "k": 128}),
    "SMILE B/32 (gate_k=16, dense experts)": ("smile_upscaling", {"gate_k": 16, "k": -1}),
}
"""Published row name -> (method config name, hyperparameters the published number used).

:data:`TABLE_METHODS` overrides it for one table. Rows absent here (Traditional MTL,
WUDI-Merging, ISO-C/CTS, SMILE L/14) have no config in ``config/method/`` and are shown as
published-only rows. The rows of the individual-expert
table are task names and map to ``dummy`` with that expert (see :func:`published_method`).
"""

TABLE_METHODS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    # The GPT-2 RegMean number used an off-diagonal scale of 0.6 (config method/gpt2/regmean).
    "gpt2_glue": {"RegMean": ("regmean", {"reduce_non_diagonal_ratio": 0.6})},
}
"""Per-table exceptions to :data:`PUBLISHED_METHODS`: table name -> {row name: mapping}."""


@dataclass(frozen=True)
class ReferenceRow:
    """One published row.

    Attributes:
        label: the published row name.
        scores: published value (%) per task, keyed by our task name where one is known.
        average: the published average (%), or None when the cell is empty.
        method: our method config name, or None for a published-only row.
        params: hyperparameters of the published number that our run must also have used.
    """

    label: str
    scores: dict[str, float | None]
    average: float | None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, report: dict[str, Any]) -> bool:
        """Whether ``report`` ran this published configuration.

        The method config must be the same (a config in a subgroup, e.g. ``gpt2/regmean``, counts
        as its base name), every hyperparameter override of the run must be one
        the published number pins, and the run's resolved config must hold the pinned values.
        So a default run matches a published default, a sweep point matches its published λ.

        Args:
            report: a run's ``report.json`` content.

        Returns:
            True when the published number is the one to compare the run with.
        """
        if self.method is None or method_name(report).rsplit("/", 1)[-1] != self.method:
            return False
        if any(k not in self.params for k in hyperparameters(report)):
            return False
        config = report.get("config", {}).get("method", {})
        return all(k in config and _same(config[k], v) for k, v in self.params.items())


@dataclass(frozen=True)
class ReferenceTable:
    """One published table.

    Attributes:
        name: file stem, e.g. ``clip-vit-b32_TA8``.
        description: the CSV's comment line (what it is, where it was published).
        tasks: our task names of the published task columns, in published order.
        rows: the published rows, in published order.
    """

    name: str
    description: str
    tasks: list[str]
    rows: list[ReferenceRow]

    def match(self, report: dict[str, Any]) -> ReferenceRow | None:
        """The first published row that ``report`` matches, or None."""
        return next((row for row in self.rows if row.matches(report)), None)


def _same(ours: Any, published: Any) -> bool:
    # Config values may come back as strings ("1/N", "0.3") or numbers; compare numerically if both are.
    try:
        return math.isclose(float(ours), float(published), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(ours) == str(published)


def published_method(label: str, table: str = "") -> tuple[str, dict[str, Any]] | None:
    """Our method config name and pinned hyperparameters for a published row name.

    Args:
        label: the published row name, e.g. ``"Task Arithmetic (λ=0.3)"`` or ``"SUN397"``.
        table: the reference table's name, for its :data:`TABLE_METHODS` exceptions.

    Returns:
        ``(method, params)``, or None when we have no config for that published method.
    """
    if label in TABLE_METHODS.get(table, {}):
        return TABLE_METHODS[table][label]
    if label in PUBLISHED_METHODS:
        return PUBLISHED_METHODS[label]
    if label in TASK_NAMES:  # a row of the individual-expert table: that expert, unmerged
        return "dummy", {"model_name": TASK_NAMES[label]}
    return None


def available() -> list[str]:
    """Names of the shipped reference tables, sorted."""
    root = resources.files("fusion_bench") / "reference"
    return sorted(p.name[: -len(".csv")] for p in root.iterdir() if p.name.endswith(".csv"))


def _number(cell: str) -> float | None:
    return float(cell) if cell.strip() else None


def parse_reference(name: str, text: str) -> ReferenceTable:
    """Parse one reference CSV.

    Args:
        name: the table's name.
        text: the CSV content (``# comment`` line, header, rows).

    Returns:
        The parsed table.

    Raises:
        ValueError: the text does not have the layout described in the module docstring.
    """
    first, _, body = text.partition("\n")
    if not first.startswith("#"):
        raise ValueError(f"reference {name}: first line must be a '# comment'")
    header, *records = [r for r in csv.reader(io.StringIO(body)) if r]
    if header[-1] not in ("Average", "Avg."):
        raise ValueError(f"reference {name}: last column must be Average, got {header[-1]!r}")
    tasks = [TASK_NAMES.get(t, t) for t in header[1:-1]]
    rows = []
    for rec in records:
        if len(rec) != len(header):
            raise ValueError(f"reference {name}: row {rec[0]!r} has {len(rec)} cells")
        method, params = published_method(rec[0], name) or (None, {})
        scores = dict(zip(tasks, map(_number, rec[1:-1]), strict=True))
        rows.append(ReferenceRow(rec[0], scores, _number(rec[-1]), method, dict(params)))
    return ReferenceTable(name, first.lstrip("#").strip(), tasks, rows)


def load_reference(name: str) -> ReferenceTable:
    """Load a shipped reference table by name.

    Args:
        name: a name from :func:`available`, e.g. ``"clip-vit-b32_TA8"``.

    Returns:
        The parsed table.

    Raises:
        ValueError: no table of that name; the message lists the available ones.
    """
    if name not in available():
        raise ValueError(f"unknown reference table {name!r}; available: {', '.join(available())}")
    path = resources.files("fusion_bench") / "reference" / f"{name}.csv"
    return parse_reference(name, path.read_text(encoding="utf-8"))
