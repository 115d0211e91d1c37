"""The installed CLI end to end on the smoke build of the tiny benchmark."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
SMOKE = "tiny_profile=smoke"
TINY_TASKS = ["digits", "scenes", "textures", "shapes", "stripes", "colors", "signs", "numerals"]


def _reports(root):
    return sorted(root.rglob("report.json"))


def test_default_job_writes_report_and_table(cli):
    proc = cli(SMOKE, "fabric.loggers=[tensorboard,csv]", "save_path=fused")
    (report_path,) = _reports(cli.cwd / "outputs")
    report = json.loads(report_path.read_text())
    assert list(report["metrics"]) == TINY_TASKS
    for m in report["metrics"].values():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["loss"] >= 0.0
    avg = sum(m["accuracy"] for m in report["metrics"].values()) / 8
    assert report["average"]["accuracy"] == pytest.approx(avg)
    assert set(report["timings_s"]) >= {"load", "fuse", "evaluate"}
    assert report["peak_memory_mb"]["cpu_peak_rss"] > 0
    assert report["versions"]["torch"] and report["versions"]["fusion_bench"]
    assert set(report["task_metadata"]) == set(TINY_TASKS)
    assert all("version" in v for v in report["task_metadata"].values())
    assert report["config"]["method"]["_target_"].endswith("TaskArithmetic")
    assert "average" in proc.stdout and "digits" in proc.stdout
    assert (cli.cwd / "fused" / "model.safetensors").exists()
    logs = report_path.parent / "logs"
    assert list(logs.rglob("events.out.tfevents.*")) and list(logs.rglob("metrics.csv"))


def test_two_point_sweep_writes_one_report_per_job(cli):
    cli(
        "-m",
        SMOKE,
        "method=task_arithmetic",
        "method.scaling_factor=0.1,0.5",
        "taskpool.limit_batches=2",
    )
    reports = _reports(cli.cwd / "multirun")
    assert len(reports) == 2
    names = sorted(p.parent.name for p in reports)
    assert names == [
        "method.scaling_factor=0.1,method=task_arithmetic,taskpool.limit_batches=2",
        "method.scaling_factor=0.5,method=task_arithmetic,taskpool.limit_batches=2",
    ]
    factors = {json.loads(p.read_text())["config"]["method"]["scaling_factor"] for p in reports}
    assert factors == {0.1, 0.5}


def test_wrong_group_option_lists_available(cli):
    proc = cli(SMOKE, "method=no_such_method", check=False)
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and "task_arithmetic" in proc.stderr


def test_wrong_hyperparameter_is_one_line(cli):
    proc = cli(SMOKE, "+method.scaling_factr=0.3", check=False)
    assert proc.returncode == 1
    assert "has no parameter 'scaling_factr'; valid parameters: scaling_factor" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_path_is_one_line(cli):
    proc = cli(SMOKE, "modelpool.models.digits=/nonexistent/ckpt", check=False)
    assert proc.returncode == 1
    assert "'/nonexistent/ckpt' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not _reports(cli.cwd / "outputs")


def test_hub_model_offline_is_one_line(cli):
    proc = cli(SMOKE, "modelpool=clip-vit-b32", "taskpool=clip-vit-b32_TA8", check=False)
    assert proc.returncode == 1
    assert "cannot reach the Hugging Face hub" in proc.stderr and "modelpool.models." in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_editable_install_finds_configs(tmp_path, cache_dir):
    """Build a wheel, install it into a target dir and run it from elsewhere."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "whl"),
            repo,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "FUSION_BENCH_CACHE": str(cache_dir)}
    code = (
        "import fusion_bench.constants as c, sys; d = c.config_dir(); "
        "assert str(d).startswith(sys.argv[1]), d; assert (d / 'fusion_bench.yaml').is_file(); print(d)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site" in out.stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion_bench.cli",
            SMOKE,
            "method=dummy",
            "taskpool.limit_batches=1",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "outputs").rglob("report.json"))
