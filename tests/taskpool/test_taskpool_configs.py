"""The CLIP task-pool configs compose from the per-task group and build their pool (no I/O)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fusion_bench.constants import config_dir

REAL = {
    "clip-vit-b32_TA8": "openai/clip-vit-base-patch32",
    "clip-vit-b16_TA8": "openai/clip-vit-base-patch16",
    "clip-vit-l14_TA8": "openai/clip-vit-large-patch14",
}
REAL_TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
TINY_TASKS = ["digits", "scenes", "textures", "shapes", "stripes", "colors", "signs", "numerals"]


def _taskpool(option: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name=None, overrides=[f"+taskpool={option}", "+tiny_profile=smoke", *overrides]
        )
    return OmegaConf.to_container(cfg.taskpool, resolve=True)


@pytest.mark.parametrize("option,clip_model", REAL.items())
def test_real_pools_compose(option, clip_model):
    node = _taskpool(option)
    assert node["_target_"] == "fusion_bench.taskpool.clip_zero_shot.CLIPZeroShotTaskPool"
    assert node["clip_model"] == clip_model
    assert list(node["tasks"]) == REAL_TASKS
    datasets = {n: t["dataset"] for n, t in node["tasks"].items()}
    assert (
        datasets["svhn"] == "ufldl-stanford/svhn"
        and node["tasks"]["svhn"]["subset"] == "cropped_digits"
    )
    assert datasets["mnist"] == "ylecun/mnist"
    assert datasets["stanford-cars"] == "tanganke/stanford_cars"
    for name in ("sun397", "resisc45", "eurosat", "gtsrb", "dtd"):
        assert datasets[name] == f"tanganke/{name}"
    for task in node["tasks"].values():
        assert task["split"] == "test" and task["metadata"]["version"] >= 1
    # the three real pools differ only in the CLIP model
    b32 = _taskpool("clip-vit-b32_TA8")
    assert {**node, "clip_model": b32["clip_model"]} == b32


def test_tiny_pool_composes_with_profile():
    node = _taskpool("clip-vit-tiny_TA8")
    assert node["clip_model"] == "tiny://smoke/pretrained"
    assert list(node["tasks"]) == TINY_TASKS
    for name, task in node["tasks"].items():
        assert task["dataset"] == f"tiny://smoke/datasets/{name}"
        assert task["split"] == "test" and task["metadata"] == {"version": 1}
        assert set(task) == {"dataset", "split", "image_column", "label_column", "metadata"}


def test_task_override_from_command_line(tmp_path):
    node = _taskpool(
        "clip-vit-b32_TA8", f"taskpool.tasks.eurosat.dataset={tmp_path}", "taskpool.limit_batches=2"
    )
    assert node["tasks"]["eurosat"]["dataset"] == str(tmp_path)
    assert node["limit_batches"] == 2


@pytest.mark.parametrize("option", [*REAL, "clip-vit-tiny_TA8"])
def test_pool_instantiates_without_io(option, monkeypatch, tmp_path):
    from hydra.utils import instantiate

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    pool = instantiate(_taskpool(option))
    assert pool.task_names == (TINY_TASKS if "tiny" in option else REAL_TASKS)
    assert set(pool.metadata()) == set(pool.task_names)
    assert pool.head_cache_dir == str(tmp_path / "zero_shot_heads")
    assert pool.classifier.text_tower._clip is None  # nothing loaded until evaluation
    expected = {"sun397": 397, "stanford-cars": 196, "gtsrb": 43, "dtd": 47}
    for name, n in expected.items():
        if name in pool.tasks:
            assert len(pool.tasks[name].classnames) == n


def test_every_clip_task_config_has_a_version():
    for path in sorted((config_dir() / "taskpool" / "clip_task").rglob("*.yaml")):
        cfg = OmegaConf.load(path)
        assert OmegaConf.select(cfg, "metadata.version") is not None, path
        assert path.read_text().startswith("#"), f"{path} must start with a comment"
