"""``fusion_bench`` command: a thin Hydra wrapper around :func:`fusion_bench.program.run`."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from fusion_bench.constants import config_dir
from fusion_bench.errors import FusionBenchError

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


@hydra.main(config_path=str(config_dir()), config_name="fusion_bench", version_base="1.3")
def _app(cfg: DictConfig) -> None:
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
        return
    print_table(report)
    print(f"report: {hc.runtime.output_dir}/{cfg.get('report_name', 'report.json')}")


def main() -> None:
    """Console entry point."""
    _app()


if __name__ == "__main__":
    main()
