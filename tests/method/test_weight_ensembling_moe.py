"""WEMoE method: magnitude pruning, upscaling = task arithmetic at init, router-only training."""

import pytest
import torch
from clip_helpers import CLASSNAMES, data_pool, save_perturbed_experts

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.prune import magnitude_prune, num_kept_entries, topk_magnitude_mask
from fusion_bench.method.task_arithmetic import TaskArithmetic
from fusion_bench.method.test_time import entropy_loss
from fusion_bench.method.weight_ensembling_moe import WeightEnsemblingMoEAlgorithm
from fusion_bench.models.we_moe import WeightEnsemblingMoE


# -- magnitude pruning -------------------------------------------------------------------------
def test_prune_keeps_exactly_the_top_k_by_hand():
    t = torch.tensor([0.5, -3.0, 1.0, 2.0, -0.1, 3.0, 0.0, 0.2, -2.0, 1.5])
    # keep 3: |3| at 1 and 5, then |2| is tied at 3 and 8: the first in index order is kept
    expected = torch.tensor([0, -3.0, 0, 2.0, 0, 3.0, 0, 0, 0, 0])
    torch.testing.assert_close(magnitude_prune(t, 0.7), expected)
    # keep 1 out of a tie of two: exactly one
    torch.testing.assert_close(
        magnitude_prune(t, 0.9), torch.tensor([0, -3.0, 0, 0, 0, 0, 0, 0, 0, 0])
    )
    # keep 5: 3, 3, 2, 2 and 1.5
    assert topk_magnitude_mask(t, 5).nonzero().flatten().tolist() == [1, 3, 5, 8, 9]
    torch.testing.assert_close(magnitude_prune(t, 0.0), t)
    torch.testing.assert_close(magnitude_prune(t, 1.0), torch.zeros(10))
    assert num_kept_entries(10, 0.9) == 1 and num_kept_entries(10, 0.75) == 3  # 2.5 -> 3
    with pytest.raises(FusionBenchError, match=r"\[0, 1\]"):
        magnitude_prune(t, 1.5)


def test_prune_random_tensor_keeps_k_largest():
    t = torch.randn(7, 13, generator=torch.Generator().manual_seed(0))
    out = magnitude_prune(t, 0.9)
    kept = out != 0
    assert int(kept.sum()) == num_kept_entries(t.numel(), 0.9) == 9
    assert t[kept].abs().min() > t[~kept].abs().max()
    torch.testing.assert_close(out[kept], t[kept])


# -- the method on the tiny CLIP fixture pool --------------------------------------------------
@pytest.fixture
def clip_pool(clip_dir, dataset_dirs, tmp_path):
    experts = save_perturbed_experts(clip_dir, tmp_path, seed=0)
    return data_pool(clip_dir, dataset_dirs, experts, tmp_path / "heads")


def _pixels(pool, n=4):
    return torch.stack([pool.task_dataset("a", "test")[i][0] for i in range(n)])


def test_upscaled_model_at_init_is_task_arithmetic(clip_pool):
    method = WeightEnsemblingMoEAlgorithm(init_lambda=0.3, max_steps=0)
    model = method.run(clip_pool)
    mlps = clip_pool.mlp_names(clip_pool.load_pretrained())
    assert all(isinstance(model.get_submodule(m), WeightEnsemblingMoE) for m in mlps)
    ta = TaskArithmetic(scaling_factor=0.3).run(clip_pool)
    x = _pixels(clip_pool)
    with torch.no_grad():
        for task in CLASSNAMES:
            torch.testing.assert_close(
                clip_pool.task_logits(model, task, x), clip_pool.task_logits(ta, task, x)
            )
    # the MoE modules hold the *pretrained* MLPs and the experts' MLP task vectors
    pre = clip_pool.load_pretrained()
    moe = model.get_submodule(mlps[0])
    torch.testing.assert_close(moe.pretrained.fc1.weight, pre.get_submodule(mlps[0]).fc1.weight)
    expert_b = clip_pool.load_model("b")
    torch.testing.assert_close(
        moe.task_vector("fc2.bias")[1],
        expert_b.get_submodule(mlps[0]).fc2.bias - pre.get_submodule(mlps[0]).fc2.bias,
    )
    report = method.extra_report()
    added = sum(
        p.numel() for m in mlps for p in model.get_submodule(m).task_vectors.values()
    ) + sum(p.numel() for m in mlps for p in model.get_submodule(m).router.parameters())
    assert report["params_pretrained"] == sum(p.numel() for p in pre.parameters())
    assert report["params_upscaled"] == report["params_pretrained"] + added
    assert report["params_trainable"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert report["tta_steps"] == 0


def test_only_router_parameters_receive_gradients(clip_pool):
    model = WeightEnsemblingMoEAlgorithm(max_steps=0).upscale(clip_pool)
    entropy_loss(clip_pool.task_logits(model, "a", _pixels(clip_pool))).backward()
    for name, p in model.named_parameters():
        is_router = ".router." in name
        assert p.requires_grad == is_router, name
        assert (p.grad is not None) == is_router, name


def test_runs_end_to_end_and_trains_the_routers(clip_pool):
    method = WeightEnsemblingMoEAlgorithm(max_steps=2, batch_size=4, lr=1e-2)
    model = method.run(clip_pool)
    report = method.extra_report()
    assert report["tta_steps"] == 2 and report["tta_loss_first"] is not None
    routers = method.artifacts()
    assert routers and all(k.endswith(("weight", "bias")) and ".router." in k for k in routers)
    last = [v for k, v in routers.items() if k.endswith("layers.2.weight")]
    assert last and any(v.abs().sum() > 0 for v in last)  # moved off the zero init
    assert not any(m.batch_reduce for m in model.modules() if isinstance(m, WeightEnsemblingMoE))
    with torch.no_grad():
        assert clip_pool.task_logits(model, "b", _pixels(clip_pool)).shape == (4, 2)


def test_sparse_variant_prunes_each_mlp_task_vector(clip_pool):
    method = WeightEnsemblingMoEAlgorithm(
        tv_prune_ratio=0.9, max_steps=1, batch_size=2, batch_reduce=True
    )
    model = method.run(clip_pool)
    pre, expert_a = clip_pool.load_pretrained(), clip_pool.load_model("a")
    name = clip_pool.mlp_names(pre)[1]
    moe = model.get_submodule(name)
    tv = expert_a.get_submodule(name).fc1.weight - pre.get_submodule(name).fc1.weight
    torch.testing.assert_close(moe.task_vector("fc1.weight")[0], magnitude_prune(tv.detach(), 0.9))
    report = method.extra_report()
    assert report["task_vector_nonzeros"] == sum(
        num_kept_entries(p[0].numel(), 0.9) * p.shape[0]
        for m in model.modules()
        if isinstance(m, WeightEnsemblingMoE)
        for p in m.task_vectors.values()
    )
    assert report["params_upscaled_sparse"] < report["params_upscaled"]


def test_argument_validation(make_pool):
    with pytest.raises(FusionBenchError, match="prune ratio"):
        WeightEnsemblingMoEAlgorithm(tv_prune_ratio=1.2)
    with pytest.raises(FusionBenchError, match="max_steps"):
        WeightEnsemblingMoEAlgorithm(max_steps=-1)
    # a pool that does not declare its MLP blocks gets the pool's clear error
    with pytest.raises(FusionBenchError, match="MLP blocks"):
        WeightEnsemblingMoEAlgorithm().run(make_pool())
    with pytest.raises(FusionBenchError, match="at least one expert"):
        WeightEnsemblingMoEAlgorithm().run(make_pool(n_experts=0))
