"""The task pools' ``split`` option: evaluate every task on its validation split for tuning."""

from __future__ import annotations

import pytest
from clip_helpers import CLASSNAMES, make_dataset_dict, task_cfg

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool
from fusion_bench.taskpool.glue_text_generation import GLUETextGenerationTaskPool
from fusion_bench.taskpool.gpt2_glue import GPT2GLUETaskPool


def _clip_pool(tasks: dict, tmp_path, split=None) -> CLIPZeroShotTaskPool:
    # opening datasets needs no CLIP model, so none is built (the location is never read)
    return CLIPZeroShotTaskPool(
        "unused-clip", tasks, head_cache_dir=str(tmp_path / "heads"), split=split
    )


@pytest.fixture(scope="module")
def three_split_dir(tmp_path_factory):
    """Task ``a`` with train / validation / test splits of different sizes (2, 1, 4 per class)."""
    from datasets import DatasetDict

    classnames = CLASSNAMES["a"]
    sizes = {"train": 2, "validation": 1, "test": 4}
    dd = DatasetDict(
        {
            s: make_dataset_dict(classnames, n_per_class=n, seed=i)["test"]
            for i, (s, n) in enumerate(sizes.items())
        }
    )
    path = tmp_path_factory.mktemp("three_splits") / "a"
    dd.save_to_disk(path)
    return path


@pytest.mark.parametrize(
    "split,expected", [(None, "test"), ("test", "test"), ("validation", "validation")]
)
def test_clip_pool_evaluates_the_chosen_split(tmp_path, three_split_dir, split, expected):
    pool = _clip_pool({"a": task_cfg(three_split_dir, CLASSNAMES["a"])}, tmp_path, split)
    n_per_class = {"test": 4, "validation": 1}[expected]
    assert len(pool.load_dataset("a")) == n_per_class * len(CLASSNAMES["a"])
    assert pool.metadata()["a"]["split"] == expected


def test_clip_pool_uses_a_task_s_own_validation_split_name(tmp_path, three_split_dir):
    cfg = task_cfg(three_split_dir, CLASSNAMES["a"], validation_split="train")
    pool = _clip_pool({"a": cfg}, tmp_path, "validation")
    assert len(pool.load_dataset("a")) == 2 * len(CLASSNAMES["a"])
    assert pool.metadata()["a"]["split"] == "train"


def test_unknown_split_role_is_one_line_error(tmp_path, three_split_dir):
    with pytest.raises(FusionBenchError, match="taskpool.split must be null") as e:
        _clip_pool({"a": task_cfg(three_split_dir, CLASSNAMES["a"])}, tmp_path, "train")
    assert "\n" not in str(e.value)


def _text_tasks(**extra) -> dict:
    return {
        "cola": {"dataset": "/nowhere/cola", "metadata": {"version": 1}, **extra},
        "mnli": {"dataset": "/nowhere/mnli", "metadata": {"version": 1}, **extra},
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda tasks, split: GLUETextGenerationTaskPool("tok", tasks, split=split),
        lambda tasks, split: GPT2GLUETaskPool(
            "tok", tasks, heads={"cola": "h", "mnli": "h"}, split=split
        ),
    ],
    ids=["text_generation", "gpt2"],
)
def test_glue_refuses_to_tune_on_its_evaluation_split(make):
    # GLUE's labelled validation split is the benchmark's evaluation split: no tuning there
    with pytest.raises(FusionBenchError, match="no held-out validation split") as e:
        make(_text_tasks(), "validation")
    assert "\n" not in str(e.value) and "validation_split=" in str(e.value)
    with pytest.raises(FusionBenchError, match="no held-out validation split"):
        make(_text_tasks(validation_split="validation"), "validation")  # mnli passes, cola not
    pool = make(_text_tasks(), None)
    assert {n: m["split"] for n, m in pool.metadata().items()} == {
        "cola": "validation",
        "mnli": "validation_matched",
    }
    # a configured held-out split (e.g. carved from train) is what tuning evaluates on
    pool = make(_text_tasks(validation_split="train_heldout"), "validation")
    assert {m["split"] for m in pool.metadata().values()} == {"train_heldout"}
