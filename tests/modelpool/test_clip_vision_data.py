"""The CLIP pool's adapter for data-dependent methods: task data, task logits, structure."""

import pytest
import torch
from clip_helpers import CLASSNAMES, task_cfg

from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool


@pytest.fixture
def pool(clip_dir, dataset_dirs, tmp_path):
    tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
    return CLIPVisionModelPool(
        {"_pretrained_": str(clip_dir), "a": str(clip_dir), "b": str(clip_dir)},
        tasks=tasks,
        head_cache_dir=str(tmp_path / "heads"),
    )


def test_pool_without_tasks_says_what_to_add(clip_dir):
    pool = CLIPVisionModelPool({"_pretrained_": str(clip_dir)})
    with pytest.raises(FusionBenchError, match=r"modelpool\.tasks\.<task>\.dataset"):
        pool.task_dataset("a")


def test_task_dataset_splits(pool):
    train, test = pool.task_dataset("a", "train"), pool.task_dataset("a", "test")
    x, y = train[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 3
    assert len(train) == len(test) == 12
    with pytest.raises(FusionBenchError, match="validation"):
        pool.task_dataset("a", "validation")  # the fixture datasets have no validation split
    with pytest.raises(ValueError):
        pool.task_dataset("a", "dev")


def test_task_logits_match_task_pool_and_carry_gradients(pool, clip_dir, dataset_dirs, tmp_path):
    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    model = pool.load_pretrained()
    x = torch.stack([pool.task_dataset("b", "test")[i][0] for i in range(4)])
    logits = pool.task_logits(model, "b", x)
    assert logits.shape == (4, 2)
    tp = CLIPZeroShotTaskPool(
        clip_model=str(clip_dir),
        tasks={"b": task_cfg(dataset_dirs["b"], CLASSNAMES["b"])},
        head_cache_dir=str(tmp_path / "heads"),
    )
    with torch.no_grad():
        expected = tp.logits(model, x, tp.zero_shot_head("b"))
    torch.testing.assert_close(logits.detach(), expected)
    # entropy minimisation (test-time adaptation) backpropagates into the vision tower
    p = logits.softmax(-1)
    (-(p * p.log()).sum(-1).mean()).backward()
    assert model.encoder.layers[0].mlp.fc1.weight.grad is not None


def test_structure_names(pool):
    model = pool.load_pretrained()
    assert pool.mlp_names(model) == ["encoder.layers.0.mlp", "encoder.layers.1.mlp"]
    linear = pool.linear_names(model)
    assert "encoder.layers.1.mlp.fc2" in linear and "encoder.layers.0.self_attn.q_proj" in linear
