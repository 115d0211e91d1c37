"""Hydra callback that closes a multirun (a grid) with a summary of its cells.

Every cell of a sweep runs in its own job dir (named by its overrides). A cell is *done* when
the dir holds a complete ``report.json`` of the cell's config (see
:func:`fusion_bench.program.run`: a done cell is skipped when the grid runs again), *failed*
when it holds ``error.json`` (written by the CLI; the other cells go on). The summary counts the
cells this sweep touched, from the files in the sweep dir, so it works with every launcher
(local, joblib, submitit): jobs may run in other processes or on other machines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("fusion_bench")


@dataclass
class SweepCells:
    """The cells of one sweep, by outcome (each a job dir)."""

    ran: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)


def sweep_cells(
    sweep_dir: str | Path, since: float, report_name: str = "report.json"
) -> SweepCells:
    """Classify the job dirs under ``sweep_dir`` that a sweep started at ``since`` touched.

    Hydra writes ``.hydra/overrides.yaml`` when a job starts, so a dir whose file is newer than
    ``since`` belongs to this sweep. Its outcome: ``error.json`` = failed; a report older than
    that job-start file = skipped (already complete; compared per cell, so a report written a
    moment before the sweep started, e.g. by a killed earlier run, still counts as skipped); a
    newer report = ran; neither = unfinished (killed, or still running elsewhere).
    """
    cells = SweepCells()
    for marker in sorted(Path(sweep_dir).rglob(".hydra/overrides.yaml")):
        if marker.stat().st_mtime < since:
            continue
        job = marker.parent.parent
        report = job / report_name
        if (job / "error.json").exists():
            cells.failed.append(job)
        elif report.exists():
            started = marker.stat().st_mtime
            (cells.ran if report.stat().st_mtime >= started else cells.skipped).append(job)
        else:
            cells.unfinished.append(job)
    return cells


class SweepSummary(Callback):
    """Print how many cells ran, were skipped or failed; exit with status 1 if any failed."""

    def __init__(self) -> None:
        self._start: float | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # one second of slack: file systems with coarse mtimes must not drop the first cell
        self._start = time.time() - 1.0

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self._start is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        cells = sweep_cells(sweep_dir, self._start, config.get("report_name", "report.json"))
        total = len(cells.ran) + len(cells.skipped) + len(cells.failed) + len(cells.unfinished)
        print(
            f"sweep {sweep_dir}: {total} cells: {len(cells.ran)} ran, "
            f"{len(cells.skipped)} skipped (already complete), {len(cells.failed)} failed"
            + (f", {len(cells.unfinished)} unfinished" if cells.unfinished else "")
        )
        for job in cells.failed:
            try:
                error = json.loads((job / "error.json").read_text()).get("error", "?")
            except (OSError, ValueError):
                error = "unreadable error.json"
            print(f"  failed: {job.name}: {error}", file=sys.stderr)
        if cells.failed:
            print("re-run the same command to retry the failed cells only", file=sys.stderr)
            sys.exit(1)
