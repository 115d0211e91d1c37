"""``scripts/finetune_clip.py`` on the smoke build: an expert the CLIP model pool loads and that
beats the pretrained tower on its task."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "finetune_clip.py"


def test_finetuned_expert_goes_into_the_pool_and_beats_pretrained(cache_dir, cli, tmp_path):
    out = tmp_path / "colors_expert"
    env = {**os.environ, "FUSION_BENCH_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    # colors: the smoke build's zero-shot heads of digits are near-identical (cosine > 0.99), so
    # a 20-step run there cannot show anything; colors goes from 30% to ~50%.
    args = ["--pretrained", "tiny://smoke/pretrained", "--task", "colors", "--steps", "20"]
    args += ["--lr", "3e-3", "--batch-size", "64", "--threads", "1", "--eval-split", "test"]
    args += ["--log-every", "10", "--no-progress", "--accelerator", "cpu", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 10/20" in proc.stdout and "step 20/20" in proc.stdout  # periodic loss lines
    info = json.loads((out / "finetune_info.json").read_text())
    assert info["dataset"] == "tiny://smoke/datasets/colors"
    assert info["accuracy_finetuned"] > info["accuracy_pretrained"] + 0.05

    # the CLI's pool loads (and validates) it in place of the built expert
    overrides = ["tiny_profile=smoke", "method=dummy", "method.model_name=colors", "fabric=cpu"]
    cli(*overrides, f"modelpool.models.colors={out}")
    (report_path,) = sorted((cli.cwd / "outputs").rglob("report.json"))
    report = json.loads(report_path.read_text())
    assert report["config"]["modelpool"]["models"]["colors"] == str(out)
    acc = report["metrics"]["colors"]["accuracy"]
    assert acc == pytest.approx(info["accuracy_finetuned"], abs=1e-6)  # same heads, same data
    from fusion_bench.tinybench import BUILD_VERSION

    root = cache_dir / "tiny_clip" / f"smoke-seed0-v{BUILD_VERSION}"
    built = json.loads((root / "BUILD_INFO.json").read_text())
    assert acc > built["accuracy"]["pretrained"]["colors"]
