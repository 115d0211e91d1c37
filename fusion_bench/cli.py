"""``fusion_bench`` command: a thin Hydra wrapper around :func:`fusion_bench.program.run`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from fusion_bench.constants import config_dir
from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    from fusion_bench.report import Report

log = logging.getLogger("fusion_bench")


def print_table(report, file=None) -> None:
    """Per-task metrics and their average as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    metric_names = sorted({k for m in report.metrics.values() for k in m})
    method = report.config.get("method", {}).get("_target_", "?").rsplit(".", 1)[-1]
    table = Table(title=f"{method} — {len(report.metrics)} tasks")
    table.add_column("task")
    for name in metric_names:
        table.add_column(name, justify="right")
    for task, m in report.metrics.items():
        table.add_row(task, *(_fmt(name, m.get(name)) for name in metric_names))
    table.add_section()
    table.add_row("average", *(_fmt(n, report.average.get(n)) for n in metric_names))
    Console(file=file or sys.stdout).print(table)
    t = report.timings_s
    print(
        "time: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
        + f" | peak RSS {report.peak_memory_mb.get('cpu_peak_rss', 0):.0f} MiB",
        file=file or sys.stdout,
    )


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    from fusion_bench.tables import PERCENT_METRICS

    return f"{100 * value:.1f}" if name in PERCENT_METRICS else f"{value:.4f}"


AUTO_OBJECTIVES = ("score", "accuracy")
"""``objective=auto`` takes the first of these a run reports: GLUE text pools' ``score``
(accuracy, or Spearman for STS-B), else ``accuracy`` (CLIP, GPT-2)."""


def objective_metric(average: Mapping[str, float], metric: str | None) -> str | None:
    """The metric ``objective=metric`` names for a run with ``average`` (resolves ``auto``)."""
    if metric == "auto":
        return next((m for m in AUTO_OBJECTIVES if average.get(m) is not None), "auto")
    return metric


def objective_value(average: Mapping[str, float], metric: str | None) -> float | None:
    """The value a run returns to Hydra's sweeper: its average of ``metric`` over tasks.

    Args:
        average: the report's ``average`` (``{metric: mean over tasks}``).
        metric: the root key ``objective`` (e.g. ``accuracy``, or ``auto``: see
            :data:`AUTO_OBJECTIVES`); ``None``: no objective.

    Returns:
        The average as a float, or ``None`` when there is no objective or the run lacks that
        metric (the Optuna sweeper records a ``None`` as a failed trial, never as a score).
    """
    metric = objective_metric(average, metric)
    if metric is None or average.get(metric) is None:
        return None
    return float(average[metric])


def _objective(report: Report, cfg: DictConfig, multirun: bool) -> float | None:
    """:func:`objective_value` of ``report`` for ``cfg.objective``, logging a missing metric."""
    asked = cfg.get("objective")
    metric = objective_metric(report.average, asked)
    value = objective_value(report.average, metric)
    if value is None and metric is not None and multirun:
        # Only a sweeper reads the return value, so a single run does not warn about it.
        wanted = (
            " or ".join(f"'{m}'" for m in AUTO_OBJECTIVES) if metric == "auto" else f"'{metric}'"
        )
        log.warning(
            "objective '%s': this run has no average %s (it has: %s); returning None, which "
            "an Optuna trial counts as failed; set objective=<one of them>",
            asked,
            wanted,
            ", ".join(sorted(report.average)) or "none",
        )
    return value


@hydra.main(config_path=str(config_dir()), config_name="fusion_bench", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    """One run; returns its objective (see :func:`objective_value`) for Hydra's sweeper."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fusion_bench.program import run

    hc = HydraConfig.get()
    try:
        run_info = {
            "choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
            "overrides": list(hc.overrides.task),
        }
        report = run(cfg, output_dir=hc.runtime.output_dir, run_info=run_info)
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            if not isinstance(e, FusionBenchError):
                raise  # a bug, not bad input: keep the traceback
            log.error("%s", e)
            print(f"fusion_bench: error: {e}", file=sys.stderr)
            sys.exit(1)
        # One failed cell must not stop the grid: it is recorded in its own job dir (and
        # counted by the sweep summary); re-running the grid retries it.
        import traceback

        from fusion_bench.utils.io import atomic_write_json

        message = str(e) if isinstance(e, FusionBenchError) else f"{type(e).__name__}: {e}"
        log.error("%s", message)
        print(f"fusion_bench: error: {message}", file=sys.stderr)
        record = {"error": message, "type": type(e).__name__, "traceback": traceback.format_exc()}
        atomic_write_json(f"{hc.runtime.output_dir}/error.json", record)
        return None  # the Optuna sweeper records a failed trial and goes on
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:  # under DDP every rank holds the same report; show it once
        print_table(report)
        print(f"report: {hc.runtime.output_dir}/{cfg.get('report_name', 'report.json')}")
    return _objective(report, cfg, hc.mode == RunMode.MULTIRUN)


def main() -> None:
    """Console entry point."""
    _app()


if __name__ == "__main__":
    main()
