"""FisherMerging on the tiny CLIP pool: the Fisher it computes, the merge, errors."""

import pytest
import torch
from clip_helpers import data_pool, save_perturbed_experts

from fusion_bench.errors import FusionBenchError
from fusion_bench.method._activations import task_examples
from fusion_bench.method.fisher_merging import FisherMerging
from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool


@pytest.fixture(scope="module")
def expert_dirs(clip_dir, tmp_path_factory):
    """Vision experts ``a`` and ``b``: the tiny CLIP's vision tower, perturbed."""
    return save_perturbed_experts(clip_dir, tmp_path_factory.mktemp("fisher_experts"), seed=10)


@pytest.fixture
def pool(clip_dir, dataset_dirs, expert_dirs, tmp_path):
    return data_pool(clip_dir, dataset_dirs, expert_dirs, tmp_path / "heads")


def _reference_fisher(pool, task, model, x):
    """Exact diagonal Fisher by brute force: one backward pass per example and class."""
    params = dict(model.named_parameters())
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    for n in range(x.shape[0]):
        log_p = torch.log_softmax(pool.task_logits(model, task, x[n : n + 1]), -1)[0]
        for y in range(log_p.shape[0]):
            grads = torch.autograd.grad(log_p[y], list(params.values()), retain_graph=True)
            for (k, _), g in zip(params.items(), grads, strict=True):
                out[k] += log_p[y].exp().detach() * g.square()
    return {k: v / x.shape[0] for k, v in out.items()}


def test_fisher_of_a_clip_expert_matches_brute_force(pool):
    method = FisherMerging(num_fisher_examples=3, batch_size=2)
    method._report = {"fisher_examples": {}}
    model = pool.load_model("b")
    keys = method.fisher_keys(pool, "b", model, task_examples(pool, "b", 2, 2, 0)[0])
    assert len(keys) == len(list(model.parameters()))  # every parameter feeds the logits
    fisher = method.fisher(pool, "b", model, keys, method.get_fabric(), torch.Generator())
    x = torch.cat(task_examples(pool, "b", 3, 2, 0))
    reference = _reference_fisher(pool, "b", model, x)
    for k in keys:
        torch.testing.assert_close(fisher[k], reference[k], atol=1e-6, rtol=1e-3)
    assert method._report["fisher_examples"] == {"b": 3}


def test_merge_is_an_elementwise_convex_combination(pool):
    method = FisherMerging(num_fisher_examples=4, batch_size=4)
    merged = method.run(pool).state_dict()
    a, b = pool.load_state_dict("a"), pool.load_state_dict("b")
    moved = 0
    for k, v in merged.items():
        assert torch.isfinite(v.float()).all()
        if not v.is_floating_point():
            assert torch.equal(v, a[k])
            continue
        lo, hi = torch.minimum(a[k], b[k]), torch.maximum(a[k], b[k])
        assert bool(((v >= lo - 1e-6) & (v <= hi + 1e-6)).all()), k
        moved += not torch.allclose(v, (a[k] + b[k]) / 2)
    assert moved > 0  # not the plain average
    report = method.extra_report()
    assert report["fisher_examples"] == {"a": 4, "b": 4}
    assert report["fisher_labels"] == "expected"


def test_sampled_labels_are_seeded(pool):
    runs = [FisherMerging(3, "sampled", batch_size=2, seed=5).run(pool) for _ in range(2)]
    for (k, v1), v2 in zip(
        runs[0].state_dict().items(), runs[1].state_dict().values(), strict=True
    ):
        assert torch.equal(v1, v2), k


def test_dominating_coefficient_selects_that_expert(pool):
    merged = FisherMerging(2, fisher_scaling_coefficients=[0.0, 1.0], batch_size=2).run(pool)
    b = pool.load_state_dict("b")
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(v, b[k])


def test_errors(pool, clip_dir):
    with pytest.raises(FusionBenchError, match="one per expert"):
        FisherMerging(2, fisher_scaling_coefficients=[1.0]).run(pool)
    with pytest.raises(FusionBenchError, match="fisher_labels"):
        FisherMerging(fisher_labels="empirical")
    no_data = CLIPVisionModelPool({"_pretrained_": str(clip_dir), "a": str(clip_dir)})
    with pytest.raises(FusionBenchError, match="task data"):
        FisherMerging(2).run(no_data)
