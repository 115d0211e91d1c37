"""SMILE's SVD maths against hand-computed tensors (fusion_bench.merging.svd)."""

import math

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.svd import (
    FULL_RANK,
    effective_rank,
    reconstruct,
    routing_logits,
    smile_expert_factors,
    svd,
    topk_routing_weights,
    truncate,
)


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_full_rank_truncation_reconstructs_exactly(shape):
    w = _rand(*shape)
    f = svd(w)
    r = min(shape)
    assert f.u.shape == (shape[0], r) and f.s.shape == (r,) and f.v.shape == (shape[1], r)
    assert torch.all(f.s[:-1] >= f.s[1:])  # descending
    torch.testing.assert_close(reconstruct(truncate(f, FULL_RANK)), w)
    torch.testing.assert_close(reconstruct(truncate(f, 100)), w)  # k > rank is clipped


def test_truncation_is_the_best_rank_k_approximation():
    w = _rand(6, 4, seed=1)
    f = svd(w)
    for k in range(1, 5):
        err = torch.linalg.matrix_norm(w - reconstruct(truncate(f, k)))
        # Eckart-Young: the Frobenius error of the rank-k truncation is ||s[k:]||.
        torch.testing.assert_close(err, f.s[k:].norm())


def test_effective_rank():
    assert effective_rank(-1, 7, 3) == 3
    assert effective_rank(2, 7, 3) == 2
    assert effective_rank(10, 7, 3) == 3
    for bad in (0, -2):
        with pytest.raises(FusionBenchError, match="positive integer"):
            effective_rank(bad, 7, 3)


def test_svd_of_half_precision_runs_in_float32():
    w = _rand(4, 3, dtype=torch.float32).half()
    f = svd(w)
    assert f.u.dtype == torch.float32
    torch.testing.assert_close(reconstruct(f).half(), w, atol=1e-3, rtol=1e-3)
    with pytest.raises(FusionBenchError, match="2-D"):
        svd(torch.zeros(2, 2, 2))


def test_expert_factors():
    w0, wi = _rand(5, 4, seed=2), _rand(5, 4, seed=3)
    b0, bi = _rand(5, seed=4), _rand(5, seed=5)
    full = smile_expert_factors(w0, wi, FULL_RANK, FULL_RANK, b0, bi)
    torch.testing.assert_close(full.u @ full.svh, wi - w0)  # exact expert
    torch.testing.assert_close(full.bias_delta, bi - b0)
    low = smile_expert_factors(w0, wi, 2, 3, b0, bi)
    assert low.u.shape == (5, 2) and low.svh.shape == (2, 4) and low.gate.shape == (3, 4)
    f = svd(wi - w0)
    torch.testing.assert_close(low.u @ low.svh, reconstruct(truncate(f, 2)))
    # The gate rows are the top right singular vectors of the delta (orthonormal).
    torch.testing.assert_close(low.gate, f.v[:, :3].T)
    torch.testing.assert_close(low.gate @ low.gate.T, torch.eye(3, dtype=torch.float64))
    # routing_use_diff=False: the router uses the singular vectors of the fine-tuned weight.
    raw = smile_expert_factors(w0, wi, 2, 3, routing_use_diff=False)
    torch.testing.assert_close(raw.gate, svd(wi).v[:, :3].T)
    assert raw.bias_delta is None
    with pytest.raises(FusionBenchError, match="bias"):
        smile_expert_factors(w0, wi, 2, 3, b0, None)
    with pytest.raises(FusionBenchError, match="shapes differ"):
        smile_expert_factors(w0, wi[:, :3], 2, 3)


def test_expert_factors_keep_the_weight_dtype():
    w0 = _rand(4, 4, dtype=torch.float32).bfloat16()
    wi = (w0.float() + 0.1).bfloat16()
    f = smile_expert_factors(w0, wi, 2, 2, w0[0], wi[0])
    assert {f.u.dtype, f.svh.dtype, f.gate.dtype, f.bias_delta.dtype} == {torch.bfloat16}


def test_routing_logits_are_projection_norms():
    # expert 0 projects on span(e0, e1), expert 1 on span(e2) (gate_k = 2, second row zero).
    gate = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    x = torch.tensor([[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(routing_logits(x, gate), torch.tensor([[5.0, 12.0], [1.0, 0.0]]))
    # any leading dims
    assert routing_logits(x.expand(2, 3, 2, 3), gate).shape == (2, 3, 2, 2)
    # general case: ||V_i^T x|| for random orthonormal V_i
    v = [torch.linalg.qr(_rand(6, 2, seed=s, dtype=torch.float32))[0] for s in (7, 8, 9)]
    xs = _rand(4, 6, seed=10, dtype=torch.float32)
    expected = torch.stack([(xs @ vi).norm(dim=-1) for vi in v], dim=-1)
    torch.testing.assert_close(routing_logits(xs, torch.stack([vi.T for vi in v])), expected)


def test_topk_weights_hand_computed():
    logits = torch.tensor([1.0, 3.0, 2.0])
    torch.testing.assert_close(topk_routing_weights(logits, 1), torch.tensor([0.0, 1.0, 0.0]))
    e = math.e
    torch.testing.assert_close(
        topk_routing_weights(logits, 2), torch.tensor([0.0, e / (1 + e), 1 / (1 + e)])
    )
    torch.testing.assert_close(topk_routing_weights(logits, 3), torch.softmax(logits, -1))


def test_topk_weights_equal_reference_renormalised_softmax():
    logits = _rand(5, 7, 4, seed=11, dtype=torch.float32)
    for top_k in (1, 2, 3, 4):
        # upstream: softmax over all experts, keep the top-k, renormalise
        probs = torch.softmax(logits, -1)
        vals, idx = torch.topk(probs, top_k, dim=-1)
        ref = torch.zeros_like(probs).scatter(-1, idx, vals / vals.sum(-1, keepdim=True))
        got = topk_routing_weights(logits, top_k)
        torch.testing.assert_close(got, ref)
        assert ((got > 0).sum(-1) == top_k).all()


def test_topk_weights_uniform_on_ties_and_errors():
    torch.testing.assert_close(topk_routing_weights(torch.zeros(2, 4), 4), torch.full((2, 4), 0.25))
    with pytest.raises(FusionBenchError, match="top_k"):
        topk_routing_weights(torch.zeros(3), 4)
    with pytest.raises(FusionBenchError, match="top_k"):
        topk_routing_weights(torch.zeros(3), 0)


def test_router_drops_null_space_directions_of_a_low_rank_delta():
    """A rank-2 delta with gate_k=4: the two extra singular vectors are an arbitrary basis of
    the null space; they get zero rows, so the router sees only the changed subspace."""
    from fusion_bench.merging.svd import smile_expert_factors

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(6, 5, generator=g)
    b, a = torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g)
    f = smile_expert_factors(w0, w0 + b @ a, k=-1, gate_k=4)
    assert torch.all(f.gate[2:] == 0) and torch.all(f.gate[:2].norm(dim=1) > 0.99)
    # the kept rows span the row space of the delta: projecting a's rows loses nothing
    proj = a @ f.gate[:2].T @ f.gate[:2]
    assert torch.allclose(proj, a, atol=1e-5)
    # a full-rank delta keeps every row
    full = smile_expert_factors(w0, w0 + torch.randn(6, 5, generator=g), k=-1, gate_k=4)
    assert torch.allclose(full.gate.norm(dim=1), torch.ones(4), atol=1e-5)
