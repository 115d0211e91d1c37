"""Collect ``report.json`` files into a results table (Markdown, CSV or LaTeX).

Tables are lists of string cells (``header``, ``rows``); the renderers only lay them out. A cell
wrapped in ``**`` is emphasised: bold in Markdown and LaTeX, plain in CSV.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: reference.py imports this module
    from fusion_bench.reference import ReferenceTable

# Overrides that select the setting rather than describe the method; not shown in row labels.
_SETTING_KEYS = {
    "experiment",  # `-m experiment=NAME` picks the pools and the grid, not a hyperparameter
    "modelpool",
    "taskpool",
    "tiny_profile",
    "objective",
    "skip_completed",
    "fabric",
    "seed",
    "save_path",
    "report_name",
}
_ROW_ORDER = ("dummy", "individual", "simple_ensemble")

PERCENT_METRICS = frozenset({"accuracy", "score", "spearman", "parsed"})
"""Metrics in [0, 1] (Spearman's rho: [-1, 1]) that tables show x100, as the published ones do."""

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Greek letters of the published labels / our header: not in LaTeX's default text fonts.
    "λ": r"$\lambda$",
    "Δ": r"$\Delta$",
}


def load_reports(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All completed reports under the given files / directories (searched recursively)."""
    found: list[Path] = []
    for p in map(Path, paths):
        found.extend(sorted(p.rglob("report.json")) if p.is_dir() else [p])
    reports = [json.loads(f.read_text()) for f in found]
    return [r for r in reports if r.get("status") == "completed"]


def method_name(report: dict[str, Any]) -> str:
    """The run's method config choice (or its class name when run outside Hydra)."""
    return (
        report.get("run_info", {}).get("choices", {}).get("method")
        or report["config"]["method"]["_target_"].rsplit(".", 1)[-1]
    )


def hyperparameters(report: dict[str, Any]) -> dict[str, str]:
    """Command-line overrides that describe the method, not the setting, in given order.

    Args:
        report: a run's ``report.json`` content.

    Returns:
        ``{key: value}`` with the ``method.`` prefix dropped, e.g. ``{"scaling_factor": "0.5"}``.
    """
    out = {}
    for o in report.get("run_info", {}).get("overrides", []):
        key, _, value = o.lstrip("+~").partition("=")
        if key == "method" or key.split(".")[0] in _SETTING_KEYS:
            continue
        out[key.removeprefix("method.")] = value
    return out


def row_label(report: dict[str, Any]) -> str:
    """Human label of a run: the method choice plus its hyperparameter overrides."""
    method = method_name(report)
    if method == "dummy":
        name = report["config"]["method"].get("model_name", "_pretrained_")
        return "Pre-trained" if name == "_pretrained_" else f"Expert '{name}'"
    if method == "individual":
        return "Fine-tuned (STL)"
    extras = [f"{k}={v}" for k, v in hyperparameters(report).items()]
    return method + (f" ({', '.join(extras)})" if extras else "")


def _order(report: dict[str, Any]) -> tuple[int, str]:
    method = report.get("run_info", {}).get("choices", {}).get("method", "")
    rank = _ROW_ORDER.index(method) if method in _ROW_ORDER else len(_ROW_ORDER)
    return rank, row_label(report)


def ordered(reports: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports in table order: pre-trained, fine-tuned, ensemble, then the rest by label."""
    return sorted(reports, key=_order)


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT_METRICS else 1.0


def task_scores(
    report: dict[str, Any], tasks: list[str], metric: str = "accuracy"
) -> list[float | None]:
    """Per-task values of ``metric`` (x100 for PERCENT_METRICS); None where a task lacks it."""
    values = [report["metrics"].get(t, {}).get(metric) for t in tasks]
    return [None if v is None else _scale(metric) * v for v in values]


def average_score(report: dict[str, Any], metric: str = "accuracy") -> float | None:
    """The run's average of ``metric`` over tasks (x100 for PERCENT_METRICS), or None."""
    v = report["average"].get(metric)
    return None if v is None else _scale(metric) * v


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _signed(v: float | None) -> str:
    # round first so that a tiny negative difference prints "+0.0", not "-0.0"
    return "-" if v is None else f"{round(v, 1) + 0.0:+.1f}"


def table_rows(
    reports: list[dict[str, Any]], metric: str = "accuracy"
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: label, one column per task (×100 for PERCENT_METRICS), average, costs."""
    if not reports:
        return [], []
    tasks = list(reports[0]["metrics"])
    header = ["Method", *tasks, "Average", "fuse s", "eval s", "peak RSS MiB"]
    rows = []
    for r in ordered(reports):
        avg = average_score(r, metric)
        cells = [row_label(r), *map(_cell, task_scores(r, tasks, metric))]
        cells.append("-" if avg is None else f"**{avg:.1f}**")
        cells.append(f"{r['timings_s'].get('fuse', 0):.1f}")
        cells.append(f"{r['timings_s'].get('evaluate', 0):.1f}")
        cells.append(f"{r['peak_memory_mb'].get('cpu_peak_rss', 0):.0f}")
        rows.append(cells)
    return header, rows


def averages_rows(
    columns: dict[str, tuple[list[dict[str, Any]], str]],
) -> tuple[list[str], list[list[str]]]:
    """One row per method label, one column per named set of runs: that run's average.

    Args:
        columns: ``column name -> (reports, metric)``, e.g. one grid per model pool.

    Returns:
        Header and rows; methods in table order of the first set they appear in, ``-`` where a
        set has no run of that method.
    """
    labels: list[str] = []
    values: dict[tuple[str, str], float | None] = {}
    for name, (reports, metric) in columns.items():
        for r in ordered(reports):
            label = row_label(r)
            if label not in labels:
                labels.append(label)
            values[(label, name)] = average_score(r, metric)
    rows = [[label, *(_cell(values.get((label, n))) for n in columns)] for label in labels]
    return ["Method", *columns], rows


def comparison_rows(
    reports: list[dict[str, Any]], reference: ReferenceTable, metric: str = "accuracy"
) -> tuple[list[str], list[list[str]]]:
    """Our rows beside a published table, then the published rows none of our runs matched.

    Columns: label, our value per task, our average (the best one in ``**``), the published
    average of the matching published row and ours minus it. A published-only row shows the
    published per-task values and average, labelled ``<name> [published]``.

    Args:
        reports: completed reports; their first one fixes the task columns.
        reference: the published table (see :mod:`fusion_bench.reference`).
        metric: a PERCENT_METRICS metric, since published numbers are percentages.

    Returns:
        ``(header, rows)`` of string cells.

    Raises:
        ValueError: ``metric`` is not a percentage metric.
    """
    if metric not in PERCENT_METRICS:
        raise ValueError(f"published numbers are percentages; metric {metric!r} is not one")
    if not reports:
        return [], []
    tasks = list(reports[0]["metrics"])
    header = ["Method", *tasks, "Average", "Published", "Δ"]
    rows, matched = [], set()
    for r in ordered(reports):
        ours, pub = average_score(r, metric), reference.match(r)
        published = None if pub is None else pub.average
        if pub is not None:
            matched.add(pub.label)
        diff = None if ours is None or published is None else ours - published
        rows.append(
            [row_label(r), *map(_cell, task_scores(r, tasks, metric)), _cell(ours)]
            + [_cell(published), _signed(diff)]
        )
    best = _best(rows, len(tasks) + 1)
    for i in best:
        rows[i][len(tasks) + 1] = f"**{rows[i][len(tasks) + 1]}**"
    for p in reference.rows:
        if p.label not in matched:
            scores = [p.scores.get(t) for t in tasks]
            rows.append([f"{p.label} [published]", *map(_cell, scores), "-", _cell(p.average), "-"])
    return header, rows


def _best(rows: list[list[str]], col: int) -> list[int]:
    """Indices of the rows holding the largest number in column ``col`` (ties: all of them)."""
    values = {}
    for i, row in enumerate(rows):
        try:
            values[i] = float(row[col].strip("*"))
        except ValueError:  # "-": no value
            continue
    top = max(values.values(), default=None)
    return [i for i, v in values.items() if v == top]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: list[str], rows: list[list[str]]) -> str:
    """CSV text of the table, emphasis markers dropped."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([[c.strip("*") for c in r] for r in rows])
    return buf.getvalue()


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters (and the Greek letters we use) escaped."""
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def latex_table(header: list[str], rows: list[list[str]], bold: str = "Average") -> str:
    """A booktabs ``tabular`` of the table, with only the best value of column ``bold`` in bold.

    Args:
        header: column names.
        rows: string cells; existing ``**`` emphasis is replaced by the best-value emphasis.
        bold: the column whose largest value is set in bold (skipped if absent).

    Returns:
        LaTeX source needing ``\\usepackage{booktabs}``.
    """
    plain = [[c.strip("*") for c in r] for r in rows]
    best = set(_best(plain, header.index(bold))) if bold in header else set()
    col = header.index(bold) if bold in header else -1

    def line(cells: list[str], i: int = -1) -> str:
        out = [latex_escape(c) for c in cells]
        if i in best:
            out[col] = f"\\textbf{{{out[col]}}}"
        return " & ".join(out) + r" \\"

    return (
        "\n".join(
            [
                r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
                r"\toprule",
                line(header),
                r"\midrule",
                *(line(r, i) for i, r in enumerate(plain)),
                r"\bottomrule",
                r"\end{tabular}",
            ]
        )
        + "\n"
    )
