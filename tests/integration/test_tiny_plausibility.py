"""On the default tiny benchmark, results have the shape the field reports.

Pre-trained zero-shot < merged < fine-tuned experts (on average), and every expert beats the
pretrained model on its own task by a wide margin.
"""

import json

import pytest

pytestmark = pytest.mark.integration


def _report(cli, *args):
    cli(*args)
    paths = sorted((cli.cwd / "outputs").rglob("report.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(paths[-1].read_text())


def test_tiny_benchmark_results_are_plausible(cli):
    pre = _report(cli, "method=dummy")
    stl = _report(cli, "method=individual")
    ta = _report(cli, "method=task_arithmetic")
    avg = _report(cli, "method=simple_average")
    for task, m in stl["metrics"].items():
        gain = m["accuracy"] - pre["metrics"][task]["accuracy"]
        assert gain >= 0.2, f"expert '{task}' beats the pretrained model by only {gain:.3f}"
    lo, hi = pre["average"]["accuracy"], stl["average"]["accuracy"]
    for merged in (ta, avg):
        assert lo < merged["average"]["accuracy"] < hi, (lo, merged["average"], hi)
