"""PNG plots of collected reports: hyperparameter sweeps, score vs size, per-task bars.

Each plot has a pure data function (tested on its own) and a drawing function that returns the
written path. Drawing uses matplotlib's object-oriented API on the non-interactive Agg canvas,
imported lazily, so importing this module (or the tables) needs no matplotlib and no display,
and no global pyplot state is touched. Output is deterministic: fixed size and dpi, sorted
series, no version stamp in the PNG metadata.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fusion_bench.tables import (
    PERCENT_METRICS,
    average_score,
    hyperparameters,
    method_name,
    ordered,
    row_label,
    task_scores,
)
from fusion_bench.utils.io import atomic_write_bytes

FIGSIZE = (8.0, 4.5)
"""Figure size in inches of every plot."""
DPI = 100

PARAM_COUNT_KEY = "params_upscaled"
"""``method_info`` key holding the fused model's total parameter count (SMILE, WEMoE)."""


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def swept_parameter(reports: list[dict[str, Any]]) -> str | None:
    """The numeric hyperparameter override taking the most distinct values, or None.

    Args:
        reports: completed reports.

    Returns:
        Its key without the ``method.`` prefix (e.g. ``"scaling_factor"``), ties broken by name;
        None when no numeric override takes at least two values.
    """
    values: dict[str, set[float]] = {}
    for r in reports:
        for key, value in hyperparameters(r).items():
            x = _number(value)
            if x is not None:
                values.setdefault(key, set()).add(x)
    swept = sorted((-len(v), k) for k, v in values.items() if len(v) >= 2)
    return swept[0][1] if swept else None


def sweep_series(
    reports: list[dict[str, Any]], param: str, metric: str = "accuracy"
) -> dict[str, list[tuple[float, float]]]:
    """Average ``metric`` against the overridden value of ``param``, one series per method.

    A series is a method plus its other hyperparameter overrides (so a grid sweep gives one
    line per value of the other parameters). Runs without a numeric override of ``param`` or
    without the metric are left out: their value of ``param`` is not what the sweep set.

    Args:
        reports: completed reports.
        param: the swept override, with or without the ``method.`` prefix.
        metric: the metric whose average is plotted (x100 for percentage metrics).

    Returns:
        ``{series label: [(x, average), ...]}``, labels sorted, points sorted by x.
    """
    param = param.removeprefix("method.")
    series: dict[str, list[tuple[float, float]]] = {}
    for r in reports:
        hp = hyperparameters(r)
        x, y = _number(hp.pop(param, "")), average_score(r, metric)
        if x is None or y is None:
            continue
        label = method_name(r) + (
            f" ({', '.join(f'{k}={v}' for k, v in hp.items())})" if hp else ""
        )
        series.setdefault(label, []).append((x, y))
    return {k: sorted(series[k]) for k in sorted(series)}


def params_points(
    reports: list[dict[str, Any]], metric: str = "accuracy"
) -> list[tuple[str, int, float]]:
    """Runs that recorded their fused model's parameter count, with their average ``metric``.

    Only counts a run wrote itself (``method_info[PARAM_COUNT_KEY]``) are used; other methods
    are left out rather than given a count they did not report.

    Args:
        reports: completed reports.
        metric: the metric whose average is plotted.

    Returns:
        ``[(row label, parameter count, average), ...]`` sorted by count, then label.
    """
    points = []
    for r in reports:
        count, y = r.get("method_info", {}).get(PARAM_COUNT_KEY), average_score(r, metric)
        if isinstance(count, int | float) and y is not None:
            points.append((row_label(r), int(count), y))
    return sorted(points, key=lambda p: (p[1], p[0]))


def per_task_bars(
    reports: list[dict[str, Any]], metric: str = "accuracy"
) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """Tasks (of the first report) and each run's per-task values, in table row order."""
    if not reports:
        return [], []
    tasks = list(reports[0]["metrics"])
    return tasks, [(row_label(r), task_scores(r, tasks, metric)) for r in ordered(reports)]


@contextmanager
def _figure(path: str | os.PathLike) -> Iterator[Any]:
    """A fresh Agg figure, written to ``path`` atomically (temp file + rename) on exit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    yield fig
    buffer = io.BytesIO()
    # No "Software" version stamp in the file: only the drawing decides its bytes.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def _colour(i: int, n: int) -> Any:
    """Series colour ``i`` of ``n``: tab10 up to 10 series, else tab20 (then repeats), so that
    a table's 13+ methods do not share colours the way tab10's cycle would make them."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)


def _axis_label(metric: str) -> str:
    return metric + (" (%)" if metric in PERCENT_METRICS else "")


def plot_sweep(
    reports: list[dict[str, Any]],
    path: str | os.PathLike,
    param: str | None = None,
    metric: str = "accuracy",
) -> Path:
    """Line plot of the average ``metric`` against a swept hyperparameter, one line per method.

    Args:
        reports: completed reports.
        path: the PNG to write.
        param: the swept override; None picks :func:`swept_parameter`.
        metric: the metric to plot.

    Returns:
        ``path``.

    Raises:
        ValueError: no swept numeric override in the reports.
    """
    param = param or swept_parameter(reports)
    series = sweep_series(reports, param, metric) if param else {}
    if not series:
        raise ValueError("no run overrides a numeric hyperparameter; nothing to plot")
    with _figure(path) as fig:
        ax = fig.add_subplot()
        for label, points in series.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel(param)
        ax.set_ylabel("average " + _axis_label(metric))
        ax.grid(True, alpha=0.3)
        fig.legend(loc="outside right upper", fontsize="small")
    return Path(path)


def plot_params(
    reports: list[dict[str, Any]], path: str | os.PathLike, metric: str = "accuracy"
) -> Path:
    """Scatter of the average ``metric`` against the fused model's parameter count.

    Args:
        reports: completed reports.
        path: the PNG to write.
        metric: the metric to plot.

    Returns:
        ``path``.

    Raises:
        ValueError: no report holds a parameter count.
    """
    points = params_points(reports, metric)
    if not points:
        raise ValueError(
            f"no report has method_info.{PARAM_COUNT_KEY} (only smile_upscaling and "
            "weight_ensembling_moe record it)"
        )
    with _figure(path) as fig:
        ax = fig.add_subplot()
        for label, count, y in points:
            ax.scatter([count / 1e6], [y])
            ax.annotate(
                label,
                (count / 1e6, y),
                fontsize="x-small",
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.margins(x=0.15, y=0.1)  # room for the point labels
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel("average " + _axis_label(metric))
        ax.grid(True, alpha=0.3)
    return Path(path)


def plot_per_task(
    reports: list[dict[str, Any]], path: str | os.PathLike, metric: str = "accuracy"
) -> Path:
    """Grouped bar chart: one group per task, one bar per run (table row order).

    Args:
        reports: completed reports.
        path: the PNG to write.
        metric: the metric to plot.

    Returns:
        ``path``.

    Raises:
        ValueError: no reports.
    """
    tasks, rows = per_task_bars(reports, metric)
    if not rows:
        raise ValueError("no reports to plot")
    width = 0.8 / len(rows)
    with _figure(path) as fig:
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(rows):
            xs = [t + (i - (len(rows) - 1) / 2) * width for t in range(len(tasks))]
            # NaN draws no bar: a task without the metric stays visibly empty, not zero
            ax.bar(
                xs,
                [math.nan if v is None else v for v in values],
                width,
                label=label,
                color=_colour(i, len(rows)),
            )
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_ylabel(_axis_label(metric))
        ax.grid(True, axis="y", alpha=0.3)
        # outside the axes: a legend inside would hide bars
        fig.legend(loc="outside right upper", fontsize="x-small")
    return Path(path)
