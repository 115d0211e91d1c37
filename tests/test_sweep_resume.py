"""Grid resume: config keys, the skip/re-run decision of a cell, and the sweep summary."""

import json
import os
import time

import pytest
from omegaconf import OmegaConf

from fusion_bench.program import _resume
from fusion_bench.report import Report, completed_report, config_key
from fusion_bench.sweep import SweepSummary, sweep_cells


def _report(key: str, status: str = "completed") -> dict:
    r = Report(
        config={"method": {"_target_": "x.Y"}},
        metrics={"a": {"accuracy": 0.5}},
        average={"accuracy": 0.5},
        timings_s={},
        peak_memory_mb={},
        task_metadata={},
        status=status,
        config_key=key,
    )
    return r.to_dict()


def test_config_key_ignores_scheduling_and_order_only():
    a = {"method": {"x": 1, "y": [1, 2]}, "seed": 0, "skip_completed": True}
    b = {"seed": 0, "method": {"y": [1, 2], "x": 1}, "skip_completed": False}
    assert config_key(a) == config_key(b)  # key order and skip_completed do not matter
    assert config_key(a) != config_key({**a, "seed": 1})
    assert config_key(a) != config_key({**a, "method": {"x": 1, "y": [2, 1]}})
    assert len(config_key(a)) == 64


def test_config_key_changes_with_the_tiny_builds_the_config_reads(monkeypatch):
    import dataclasses

    import fusion_bench.tinybench as tiny_clip
    import fusion_bench.tinybench.openclip as tiny_openclip
    from fusion_bench.utils.hub import tiny_builds

    cfg = {
        "modelpool": {"models": {"_pretrained_": "tiny://smoke/pretrained", "a": "/x"}},
        "taskpool": {"tasks": [{"path": "tiny-openclip://default/datasets/a"}]},
        "seed": 0,
    }
    before = tiny_builds(cfg)
    v = tiny_clip.BUILD_VERSION
    assert before == [f"tiny_clip/smoke-v{v}", f"tiny_openclip/default-v1+tiny_clip-v{v}"]
    assert tiny_builds({"modelpool": {"models": {"a": "/x"}}}) == []
    # A new recipe version of the CLIP build changes its identity and that of its conversion.
    bumped = dataclasses.replace(tiny_clip.BENCHMARK, version=v + 1)
    monkeypatch.setattr(tiny_clip, "BENCHMARK", bumped)
    monkeypatch.setattr(
        tiny_openclip,
        "BENCHMARK",
        dataclasses.replace(tiny_openclip.BENCHMARK, sources={"tiny_clip": v + 1}),
    )
    after = tiny_builds(cfg)
    assert after == [f"tiny_clip/smoke-v{v + 1}", f"tiny_openclip/default-v1+tiny_clip-v{v + 1}"]
    assert config_key(cfg, before) != config_key(cfg, after)
    assert config_key(cfg, before) == config_key(cfg, list(before))
    assert config_key(cfg) != config_key(cfg, before)


def test_completed_report_needs_status_and_same_key(tmp_path):
    path = tmp_path / "report.json"
    assert completed_report(path, "k") is None  # missing
    path.write_text("{not json")
    assert completed_report(path, "k") is None  # torn / corrupted
    path.write_text(json.dumps(_report("k", status="running")))
    assert completed_report(path, "k") is None
    path.write_text(json.dumps(_report("other")))
    assert completed_report(path, "k") is None
    path.write_text(json.dumps({**_report("k"), "field_of_a_newer_version": 1}))
    done = completed_report(path, "k")
    assert isinstance(done, Report) and done.average == {"accuracy": 0.5}


def test_resume_skips_done_cell_and_cleans_stale_ones(tmp_path):
    cfg = OmegaConf.create({"report_name": "report.json", "skip_completed": True})
    report, error = tmp_path / "report.json", tmp_path / "error.json"
    report.write_text(json.dumps(_report("k")))
    assert _resume(tmp_path, cfg, "k").config_key == "k" and report.exists()

    error.write_text('{"error": "earlier attempt"}')
    assert _resume(tmp_path, cfg, "changed") is None  # config changed: run again
    assert not report.exists() and not error.exists()  # never two outcomes for one cell

    report.write_text(json.dumps(_report("k")))
    forced = OmegaConf.create({"report_name": "report.json", "skip_completed": False})
    assert _resume(tmp_path, forced, "k") is None and not report.exists()


def _cell(root, name, *, started, report=None, error=False):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    marker = job / ".hydra" / "overrides.yaml"
    marker.write_text("[]")
    os.utime(marker, (started, started))
    if report is not None:
        (job / "report.json").write_text("{}")
        os.utime(job / "report.json", (report, report))
    if error:
        (job / "error.json").write_text(json.dumps({"error": f"{name} broke"}))
    return job


def test_sweep_cells_classifies_by_files(tmp_path):
    t0 = time.time()
    _cell(tmp_path, "old_sweep", started=t0 - 100, report=t0 - 100)  # another sweep's cell
    _cell(tmp_path, "ran", started=t0 + 1, report=t0 + 2)
    _cell(tmp_path, "skipped", started=t0 + 1, report=t0 - 50)
    # written by a killed earlier run just before this sweep began (within the start slack)
    _cell(tmp_path, "skipped_recent", started=t0 + 3, report=t0 + 0.5)
    _cell(tmp_path, "failed", started=t0 + 1, error=True)
    _cell(tmp_path, "killed", started=t0 + 1)
    cells = sweep_cells(tmp_path, since=t0)
    names = {k: [p.name for p in getattr(cells, k)] for k in ("ran", "skipped", "failed")}
    assert names == {
        "ran": ["ran"],
        "skipped": ["skipped", "skipped_recent"],
        "failed": ["failed"],
    }
    assert [p.name for p in cells.unfinished] == ["killed"]


def test_summary_exits_non_zero_when_a_cell_failed(tmp_path, capsys):
    cb = SweepSummary()
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    cb.on_multirun_start(cfg)
    _cell(tmp_path, "ok", started=time.time(), report=time.time())
    cb.on_multirun_end(cfg)
    assert "1 cells: 1 ran, 0 skipped (already complete), 0 failed" in capsys.readouterr().out
    _cell(tmp_path, "bad", started=time.time(), error=True)
    with pytest.raises(SystemExit) as exit_info:
        cb.on_multirun_end(cfg)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "bad: bad broke" in captured.err
