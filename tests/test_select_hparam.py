"""scripts/select_hparam.py on hand-made reports: the choice, ties, the test-split refusal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "select_hparam.py"


@pytest.fixture(scope="module")
def sh():
    spec = importlib.util.spec_from_file_location("select_hparam", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(lam: float, acc: float, role: str | None = "validation", threshold: int | None = None):
    overrides = [f"method.scaling_factor={lam}", "experiment=tune", "taskpool.limit_batches=1"]
    method = {"_target_": "x.TaskArithmetic", "scaling_factor": lam}
    if threshold is not None:
        overrides.insert(1, f"method.threshold={threshold}")
        method["threshold"] = threshold
    return {
        "status": "completed",
        "config_key": f"k{lam}-{threshold}",
        "config": {"method": method, "taskpool": {"split": role}},  # role: validation | None
        "average": {"accuracy": acc, "loss": 1.0 - acc},
        "metrics": {"a": {"accuracy": acc}},
        "task_metadata": {"a": {"split": role or "test"}, "b": {"split": role or "test"}},
        "run_info": {"choices": {"method": "task_arithmetic"}, "overrides": overrides},
    }


def _sweep(root: Path, reports: list[dict]) -> Path:
    for i, r in enumerate(reports):
        d = root / "sweep" / f"job{i}"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps(r))
    return root / "sweep"


def test_best_average_wins_and_ties_go_to_the_smaller_value(sh, tmp_path, capsys):
    sweep = _sweep(
        tmp_path, [_report(0.5, 0.8), _report(0.3, 0.8), _report(0.1, 0.7), _report(1.0, 0.6)]
    )
    assert sh.main([str(sweep), "--param", "method.scaling_factor"]) == 0
    out = capsys.readouterr().out
    assert (
        "chosen (4 candidates, by average validation accuracy): {'method.scaling_factor': 0.3}"
        in out
    )
    # the table lists every value in order, the chosen one starred
    rows = [line for line in out.splitlines() if line.startswith("| 0.") or line.startswith("| 1.")]
    assert [r.split("|")[1].strip() for r in rows] == ["0.1", "0.3", "0.5", "1.0"]
    assert rows[1].rstrip(" |").endswith("*")
    # the test command: the chosen job's overrides on each task's test split, no run
    cmd = next(line for line in out.splitlines() if line.startswith("test run: fusion_bench "))
    assert "method.scaling_factor=0.3 " in cmd and "taskpool.split=null" in cmd
    assert "taskpool.limit_batches=1" in cmd and "hydra.run.dir=" in cmd
    assert not (tmp_path / "sweep-test").exists()


def test_minimize_and_other_metrics(sh):
    rows = sh.candidates([_report(0.5, 0.8), _report(0.3, 0.9)], ["method.scaling_factor"], "loss")
    assert [v for v, _, _ in rows] == [(0.3,), (0.5,)]
    assert rows[sh.choose(rows, minimize=True)][0] == (0.3,)  # loss 0.1 < 0.2
    assert rows[sh.choose(rows)][0] == (0.5,)


def test_several_params_and_inferred_params(sh, tmp_path, capsys):
    reports = [_report(0.5, 0.8, threshold=20), _report(0.5, 0.9, threshold=10)]
    assert sh.varying_keys(reports) == ["method.threshold"]
    rows = sh.candidates(reports, ["method.scaling_factor", "method.threshold"], "accuracy")
    assert rows[sh.choose(rows)][0] == (0.5, 10)
    sweep = _sweep(tmp_path, reports)
    assert sh.main([str(sweep)]) == 0  # --param defaults to what varies
    assert "{'method.threshold': 10}" in capsys.readouterr().out


def test_refuses_reports_evaluated_on_a_test_split(sh, tmp_path, capsys):
    sweep = _sweep(tmp_path, [_report(0.1, 0.7), _report(0.3, 0.9, role=None)])
    assert sh.main([str(sweep), "--param", "method.scaling_factor"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("select_hparam: error: report ") and "evaluated on test data" in err
    assert "taskpool.split=null; task 'a': split 'test'" in err and "\n" not in err
    for role in ("test", "train"):
        with pytest.raises(sh.SelectionError, match="test data"):
            sh.check_tuning_split(_report(0.1, 0.7, role=role))
    # a task pool without the option (no taskpool.split) evaluates on each task's test split
    legacy = _report(0.1, 0.7)
    del legacy["config"]["taskpool"]["split"]
    with pytest.raises(sh.SelectionError, match="test data"):
        sh.check_tuning_split(legacy)


def test_errors_are_one_line(sh, tmp_path, capsys):
    assert sh.main([str(tmp_path / "missing")]) == 1
    assert sh.main([str(tmp_path)]) == 1  # no reports
    sweep = _sweep(tmp_path, [_report(0.1, 0.7), _report(0.3, 0.9)])
    assert sh.main([str(sweep), "--metric", "spearman"]) == 1
    assert sh.main([str(sweep), "--param", "method.nope"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("select_hparam: error: ") for e in errors)
    assert "no average 'spearman'" in errors[2] and "no config entry 'method.nope'" in errors[3]


def test_same_values_with_other_differences_are_refused(sh):
    a, b = _report(0.3, 0.8), _report(0.3, 0.9)
    b["config_key"] = "other"
    with pytest.raises(sh.SelectionError, match="differ in other settings"):
        sh.candidates([a, b], ["method.scaling_factor"], "accuracy")
    b["config_key"] = a["config_key"]  # a copied job dir counts once
    assert len(sh.candidates([a, b], ["method.scaling_factor"], "accuracy")) == 1


def test_final_overrides_replace_the_split_and_quote_the_dir(sh, tmp_path):
    r = _report(0.3, 0.8)
    r["run_info"]["overrides"].append("taskpool.split=validation")
    out = sh.final_overrides(r, tmp_path / "a=b,c-test")
    assert "taskpool.split=validation" not in out
    assert out[-2:] == ["taskpool.split=null", f"hydra.run.dir='{tmp_path}/a=b,c-test'"]
