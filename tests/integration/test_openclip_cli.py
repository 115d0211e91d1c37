"""The tiny open_clip pool through the CLI: the same benchmark converted into open_clip formats
gives the same numbers as the Hugging Face pool, and a pickled expert fails with a one-line error
naming the opt-in and the converter."""

import json

import pytest
import torch

pytestmark = pytest.mark.integration


def test_open_clip_pool_reproduces_the_hf_pool(cli):
    sweep = cli.cwd / "multirun"
    cli(
        "-m",
        "tiny_profile=smoke",
        "method=task_arithmetic",
        "modelpool=clip-vit-tiny,openclip-vit-tiny",
        "taskpool=clip-vit-tiny_TA8",
        "taskpool.limit_batches=1",
        f"hydra.sweep.dir={sweep}",
    )
    reports = {}
    for path in sweep.rglob("report.json"):
        report = json.loads(path.read_text())
        reports[report["config"]["modelpool"]["_target_"].rsplit(".", 1)[-1]] = report
    hf = reports["CLIPVisionModelPool"]
    oc = reports["OpenCLIPVisionModelPool"]
    assert oc["task_metadata"]["digits"]["text_tower"].startswith("open_clip fb-tiny-smoke")
    assert hf["task_metadata"]["digits"]["text_tower"] == "tiny://smoke/pretrained"
    for task, m in hf["metrics"].items():
        assert oc["metrics"][task]["accuracy"] == m["accuracy"], task
        assert oc["metrics"][task]["loss"] == pytest.approx(m["loss"], abs=1e-4), task


def test_pickled_expert_without_opt_in_is_one_line(cli, tmp_path):
    path = tmp_path / "finetuned.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, as in the release
    proc = cli(
        "tiny_profile=smoke",
        "method=simple_average",
        "modelpool=openclip-vit-tiny",
        "taskpool=clip-vit-tiny_TA8",
        f"modelpool.models.digits={path}",
        check=False,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "allow_pickle" in line]
    assert len(lines) == 1 and "convert_openclip_checkpoints.py --allow-pickle" in lines[0]
    assert "Traceback" not in proc.stderr
