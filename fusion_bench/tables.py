"""Collect ``report.json`` files into a results table (Markdown or CSV)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Overrides that select the setting rather than describe the method; not shown in row labels.
_SETTING_KEYS = {
    "modelpool",
    "taskpool",
    "tiny_profile",
    "fabric",
    "seed",
    "save_path",
    "report_name",
}
_ROW_ORDER = ("dummy", "individual", "simple_ensemble")

PERCENT_METRICS = frozenset({"accuracy", "score", "spearman", "parsed"})
"""Metrics in [0, 1] (Spearman's rho: [-1, 1]) that tables show x100, as the published ones do."""


def load_reports(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All completed reports under the given files / directories (searched recursively)."""
    found: list[Path] = []
    for p in map(Path, paths):
        found.extend(sorted(p.rglob("report.json")) if p.is_dir() else [p])
    reports = [json.loads(f.read_text()) for f in found]
    return [r for r in reports if r.get("status") == "completed"]


def row_label(report: dict[str, Any]) -> str:
    """Human label of a run: the method choice plus its hyperparameter overrides."""
    info = report.get("run_info", {})
    method = (
        info.get("choices", {}).get("method")
        or report["config"]["method"]["_target_"].rsplit(".", 1)[-1]
    )
    extras = []
    for o in info.get("overrides", []):
        key, _, value = o.lstrip("+~").partition("=")
        if key == "method" or key.split(".")[0] in _SETTING_KEYS:
            continue
        extras.append(f"{key.removeprefix('method.')}={value}")
    if method == "dummy":
        name = report["config"]["method"].get("model_name", "_pretrained_")
        return "Pre-trained" if name == "_pretrained_" else f"Expert '{name}'"
    if method == "individual":
        return "Fine-tuned (STL)"
    return method + (f" ({', '.join(extras)})" if extras else "")


def _order(report: dict[str, Any]) -> tuple[int, str]:
    method = report.get("run_info", {}).get("choices", {}).get("method", "")
    rank = _ROW_ORDER.index(method) if method in _ROW_ORDER else len(_ROW_ORDER)
    return rank, row_label(report)


def table_rows(
    reports: list[dict[str, Any]], metric: str = "accuracy"
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: label, one column per task (×100 for PERCENT_METRICS), average, costs."""
    if not reports:
        return [], []
    tasks = list(reports[0]["metrics"])
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    header = ["Method", *tasks, "Average", "fuse s", "eval s", "peak RSS MiB"]
    rows = []
    for r in sorted(reports, key=_order):
        cells = [row_label(r)]
        for t in tasks:
            v = r["metrics"].get(t, {}).get(metric)
            cells.append("-" if v is None else f"{scale * v:.1f}")
        avg = r["average"].get(metric)
        cells.append("-" if avg is None else f"**{scale * avg:.1f}**")
        cells.append(f"{r['timings_s'].get('fuse', 0):.1f}")
        cells.append(f"{r['timings_s'].get('evaluate', 0):.1f}")
        cells.append(f"{r['peak_memory_mb'].get('cpu_peak_rss', 0):.0f}")
        rows.append(cells)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: list[str], rows: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([[c.strip("*") for c in r] for r in rows])
    return buf.getvalue()
