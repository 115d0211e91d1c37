"""A grid killed mid-way (SIGKILL) resumes: one report per cell, the same table as a clean run."""

import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

CELLS = ["method=dummy", "method=simple_average", "method=task_arithmetic"]
GRID = [
    "-m",
    "experiment=tiny_clip_TA8",
    "tiny_profile=smoke",
    "method=dummy,simple_average,task_arithmetic",
    "taskpool.limit_batches=1",
]


def _cells(root):
    """cell dir name -> its report's per-task metrics; fails on a cell with two reports."""
    out = {}
    for path in sorted(root.rglob("report.json")):
        cell = path.parent.name.split(",taskpool")[0]
        assert cell not in out, f"two reports for {cell}"
        out[cell] = json.loads(path.read_text())["metrics"]
    return out


def test_killed_grid_resumes_without_duplicates(cli):
    grid = cli.cwd / "grid"
    proc = subprocess.Popen(
        [cli.exe, *GRID, f"hydra.sweep.dir={grid}"],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes every child too
    )
    deadline = time.monotonic() + 900  # the first cell may build the smoke benchmark
    while not list(grid.rglob("report.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no cell finished within 15 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _cells(grid)
    assert 1 <= len(done_before) < len(CELLS), "the kill came too late to test a resume"

    resumed = cli(*GRID, f"hydra.sweep.dir={grid}")
    skipped = len(done_before)
    assert f"{len(CELLS) - skipped} ran, {skipped} skipped" in resumed.stdout
    assert resumed.stdout.count("is complete for this config: skipping the run") == skipped
    after = _cells(grid)
    assert sorted(after) == CELLS and not list(grid.rglob("error.json"))
    for cell, metrics in done_before.items():
        assert after[cell] == metrics  # the finished cell was not re-run

    again = cli(*GRID, f"hydra.sweep.dir={grid}")  # nothing left to do
    assert f"0 ran, {len(CELLS)} skipped" in again.stdout and _cells(grid) == after

    clean = cli.cwd / "clean"
    cli(*GRID, f"hydra.sweep.dir={clean}")
    assert _cells(clean) == after  # the same table as an uninterrupted grid
