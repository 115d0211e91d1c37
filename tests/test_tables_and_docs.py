import json
from pathlib import Path

import pytest

from fusion_bench.docs import method_table, replace_block, update_readme
from fusion_bench.tables import csv_table, load_reports, markdown_table, row_label, table_rows

README = Path(__file__).resolve().parent.parent / "README.md"


def _report(method, overrides=(), acc=(0.5, 0.7), fuse=1.0, **method_cfg):
    return {
        "status": "completed",
        "config": {"method": {"_target_": f"fusion_bench.method.x.{method.title()}", **method_cfg}},
        "run_info": {"choices": {"method": method}, "overrides": list(overrides)},
        "metrics": {"t1": {"accuracy": acc[0]}, "t2": {"accuracy": acc[1]}},
        "average": {"accuracy": sum(acc) / 2},
        "timings_s": {"fuse": fuse, "evaluate": 2.0},
        "peak_memory_mb": {"cpu_peak_rss": 100.0},
    }


def test_row_labels():
    assert row_label(_report("dummy", model_name="_pretrained_")) == "Pre-trained"
    assert row_label(_report("dummy", model_name="t1")) == "Expert 't1'"
    assert row_label(_report("individual")) == "Fine-tuned (STL)"
    r = _report(
        "task_arithmetic",
        ["method=task_arithmetic", "method.scaling_factor=0.5", "tiny_profile=smoke"],
    )
    assert row_label(r) == "task_arithmetic (scaling_factor=0.5)"


def test_rows_are_ordered_and_scaled():
    reports = [
        _report("task_arithmetic", acc=(0.6, 0.8)),
        _report("individual", acc=(0.9, 1.0)),
        _report("dummy", acc=(0.1, 0.3), model_name="_pretrained_"),
    ]
    header, rows = table_rows(reports)
    assert header[:4] == ["Method", "t1", "t2", "Average"]
    assert [r[0] for r in rows] == ["Pre-trained", "Fine-tuned (STL)", "task_arithmetic"]
    assert rows[2][1:4] == ["60.0", "80.0", "**70.0**"]
    md = markdown_table(header, rows)
    assert md.count("\n") == 5 and "| task_arithmetic | 60.0 | 80.0 | **70.0** |" in md
    assert "70.0" in csv_table(header, rows) and "**" not in csv_table(header, rows)


def test_load_reports_skips_incomplete(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(_report("dummy")))
    bad = _report("dummy")
    bad["status"] = "failed"
    (tmp_path / "b" / "report.json").write_text(json.dumps(bad))
    assert len(load_reports([tmp_path])) == 1


def test_replace_block():
    text = "a\n<!-- x:start (generated; do not edit by hand) -->\nold\n<!-- x:end -->\nb"
    assert replace_block(text, "x", "new\n") == text.replace("old", "new")
    with pytest.raises(ValueError):
        replace_block("no markers", "x", "y")


def test_readme_method_table_is_current():
    assert update_readme(README, {"method-table": method_table()}, check=True) == [], (
        "run: python scripts/method_table.py"
    )


def test_averages_rows_put_grids_side_by_side():
    from fusion_bench.tables import averages_rows

    def rep(method, avg, metric="accuracy"):
        return {
            "config": {"method": {"_target_": f"x.{method}"}},
            "metrics": {"a": {metric: avg}},
            "average": {metric: avg},
            "run_info": {"choices": {"method": method}, "overrides": [f"method={method}"]},
            "status": "completed",
        }

    header, rows = averages_rows(
        {
            "T5": (
                [rep("task_arithmetic", 0.5, "score"), rep("individual", 0.9, "score")],
                "score",
            ),
            "GPT-2": ([rep("task_arithmetic", 0.641)], "accuracy"),
        }
    )
    assert header == ["Method", "T5", "GPT-2"]
    assert rows == [["Fine-tuned (STL)", "90.0", "-"], ["task_arithmetic", "50.0", "64.1"]]


def test_summary_table_column_spec():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "summary_table", Path(__file__).resolve().parent.parent / "scripts" / "summary_table.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_column("T5, full=dir/x@score") == ("T5, full", "dir/x", "score")
    assert mod.parse_column("GPT-2=dir") == ("GPT-2", "dir", "accuracy")
    with pytest.raises(ValueError, match="NAME=DIR"):
        mod.parse_column("no-equals-sign")
