"""Twin-Merging maths: exclusive-knowledge SVD compression and the routed low-rank correction."""

import math

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.twin import (
    conv_correction,
    embedding_correction,
    exclusive_factors,
    low_rank_correction,
    merged_weight,
    retained_energy,
    stack_factors,
    task_weights,
    truncation_error,
)

M, N, T = 5, 4, 3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def layers():
    """A shared weight/bias and T experts' weights/biases (float64 for tight comparisons)."""
    g = _gen(0)
    w0 = torch.randn(M, N, generator=g, dtype=torch.float64)
    b0 = torch.randn(M, generator=g, dtype=torch.float64)
    ws = [w0 + torch.randn(M, N, generator=g, dtype=torch.float64) for _ in range(T)]
    bs = [b0 + torch.randn(M, generator=g, dtype=torch.float64) for _ in range(T)]
    return w0, b0, ws, bs


def _stacked(layers, rank):
    w0, b0, ws, bs = layers
    return stack_factors(
        [exclusive_factors(w, w0, rank, b, b0) for w, b in zip(ws, bs, strict=True)]
    )


def test_rank_truncation_hand_checked():
    # dW = 5 u1 v1^T + 2 u2 v2^T with orthonormal u's and v's: the rank-1 truncation keeps
    # 5 u1 v1^T, its Frobenius error is 2 and it retains 25 / 29 of the energy.
    u1, u2 = torch.tensor([0.6, 0.8, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    v1, v2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    delta = 5 * torch.outer(u1, v1) + 2 * torch.outer(u2, v2)
    shared = torch.zeros(3, 2)
    f = exclusive_factors(shared + delta, shared, rank=1)
    approx = f.u @ f.svh
    torch.testing.assert_close(approx, 5 * torch.outer(u1, v1))
    assert math.isclose(float((delta - approx).norm()), 2.0, rel_tol=1e-6)
    assert math.isclose(f.energy, 25 / 29, rel_tol=1e-6)
    s = torch.tensor([5.0, 2.0])
    assert truncation_error(s, 1) == pytest.approx(2.0)
    assert retained_energy(s, 1) == pytest.approx(25 / 29)
    assert retained_energy(torch.zeros(2), 1) == 1.0
    # a rank above min(m, n) is clipped, and -1 means full rank: both reproduce dW exactly
    for rank in (-1, 2, 7):
        f = exclusive_factors(shared + delta, shared, rank=rank)
        assert f.u.shape == (3, 2) and f.svh.shape == (2, 2)
        torch.testing.assert_close(f.u @ f.svh, delta)


def test_truncation_is_eckart_young_optimal(layers):
    w0, _, ws, _ = layers
    s = torch.linalg.svdvals(ws[0] - w0)
    for k in range(1, min(M, N) + 1):
        f = exclusive_factors(ws[0], w0, rank=k)
        err = float((ws[0] - w0 - f.u @ f.svh).norm())
        assert err == pytest.approx(truncation_error(s, k), abs=1e-9)


def test_one_hot_full_rank_is_the_expert_layer(layers):
    w0, b0, ws, bs = layers
    u, svh, bias = _stacked(layers, rank=-1)
    x = torch.randn(6, 2, N, generator=_gen(1), dtype=torch.float64)  # batch, tokens, features
    for t in range(T):
        one_hot = torch.zeros(6, T, dtype=torch.float64)
        one_hot[:, t] = 1
        y = torch.nn.functional.linear(x, w0, b0) + low_rank_correction(x, one_hot, u, svh, bias)
        torch.testing.assert_close(y, torch.nn.functional.linear(x, ws[t], bs[t]))


def test_uniform_full_rank_is_shared_plus_mean_delta(layers):
    w0, b0, ws, bs = layers
    u, svh, bias = _stacked(layers, rank=-1)
    x = torch.randn(4, N, generator=_gen(2), dtype=torch.float64)
    uniform = torch.full((4, T), 1 / T, dtype=torch.float64)
    y = torch.nn.functional.linear(x, w0, b0) + low_rank_correction(x, uniform, u, svh, bias)
    w_mean = w0 + sum(w - w0 for w in ws) / T
    b_mean = b0 + sum(b - b0 for b in bs) / T
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w_mean, b_mean))


@pytest.mark.parametrize("rank", [1, 2, -1])
def test_correction_equals_per_sample_weight_merge(layers, rank):
    """Each sample with its own weights == that sample run through theta* + sum_t w_t v_t."""
    w0, b0, *_ = layers
    u, svh, bias = _stacked(layers, rank=rank)
    x = torch.randn(5, 3, N, generator=_gen(3), dtype=torch.float64)
    weights = torch.softmax(torch.randn(5, T, generator=_gen(4), dtype=torch.float64), -1)
    y = torch.nn.functional.linear(x, w0, b0) + low_rank_correction(x, weights, u, svh, bias)
    per_sample_w = merged_weight(w0, weights, u, svh)  # [B, m, n]
    per_sample_b = b0 + weights @ bias
    expected = torch.einsum("bln,bmn->blm", x, per_sample_w) + per_sample_b[:, None]
    torch.testing.assert_close(y, expected)


def test_layer_without_bias_and_shape_errors(layers):
    w0, _, ws, _ = layers
    u, svh, bias = stack_factors([exclusive_factors(w, w0, 2) for w in ws])
    assert bias is None and u.shape == (M, 2 * T) and svh.shape == (2 * T, N)
    x = torch.randn(2, N, dtype=torch.float64)
    out = low_rank_correction(x, torch.ones(2, T, dtype=torch.float64), u, svh)
    assert out.shape == (2, M)
    with pytest.raises(FusionBenchError, match="batch"):
        low_rank_correction(x, torch.ones(3, T, dtype=torch.float64), u, svh)
    with pytest.raises(FusionBenchError, match=r"\[batch, tasks\]"):
        task_weights(torch.ones(T), x, 1, 2)
    # an input with batch dim 1 (shared by the batch) broadcasts to the routing batch
    assert low_rank_correction(x[:1], torch.ones(4, T, dtype=torch.float64), u, svh).shape == (4, M)
    with pytest.raises(FusionBenchError, match="shapes differ"):
        exclusive_factors(torch.zeros(2, 3), torch.zeros(3, 2), 1)
    with pytest.raises(FusionBenchError, match="bias"):
        exclusive_factors(w0, w0, 1, b_expert=torch.zeros(M))
    with pytest.raises(FusionBenchError, match="rank"):
        exclusive_factors(w0, w0, 0)
    mixed = [exclusive_factors(ws[0], w0, 1), exclusive_factors(ws[1], w0, 2)]
    with pytest.raises(FusionBenchError, match="one rank"):
        stack_factors(mixed)


def test_task_weights_layout():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = task_weights(w, torch.zeros(2, 5), k=2, ndim=4, channel_dim=1)
    assert out.shape == (2, 4, 1, 1)
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[1.0, 1, 2, 2], [3, 3, 4, 4]]))


def test_conv_correction_is_the_per_sample_merged_kernel():
    """A conv is linear in its kernel: routing the flattened-kernel SVD factors equals running
    each sample with its own merged kernel (stride and padding kept)."""
    g = _gen(5)
    cin, cout, ks = 3, 4, (3, 2)
    k0 = torch.randn(cout, cin, *ks, generator=g, dtype=torch.float64)
    b0 = torch.randn(cout, generator=g, dtype=torch.float64)
    kernels = [k0 + torch.randn(k0.shape, generator=g, dtype=torch.float64) for _ in range(T)]
    biases = [b0 + torch.randn(cout, generator=g, dtype=torch.float64) for _ in range(T)]
    fs = [exclusive_factors(k, k0, -1, b, b0) for k, b in zip(kernels, biases, strict=True)]
    assert fs[0].svh.shape == (cout, cin * 6)  # flattened kernel: rank min(4, 18) = 4
    u, svh, bias = stack_factors(fs)
    svh_kernel = svh.reshape(-1, cin, *ks)

    def conv(x, kernel, b=None):
        return torch.nn.functional.conv2d(x, kernel, b, stride=(2, 1), padding=1)

    x = torch.randn(4, cin, 7, 6, generator=g, dtype=torch.float64)
    weights = torch.softmax(torch.randn(4, T, generator=g, dtype=torch.float64), -1)
    weights[0] = torch.tensor([0.0, 1.0, 0.0])  # sample 0: exactly expert 1
    y = conv(x, k0, b0) + conv_correction(x, weights, u, svh_kernel, conv, bias)
    for i in range(4):
        kernel = k0 + sum(weights[i, t] * (kernels[t] - k0) for t in range(T))
        b = b0 + sum(weights[i, t] * (biases[t] - b0) for t in range(T))
        torch.testing.assert_close(y[i : i + 1], conv(x[i : i + 1], kernel, b))
    torch.testing.assert_close(y[:1], conv(x[:1], kernels[1], biases[1]))


def test_embedding_correction_is_the_per_sample_merged_table():
    g = _gen(6)
    e0 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    tables = [e0 + torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(T)]
    u, svh, bias = stack_factors([exclusive_factors(e, e0, -1) for e in tables])
    assert bias is None and u.shape == (7, 5 * T)
    ids = torch.tensor([[0, 3, 6], [2, 2, 1]])
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    y = e0[ids] + embedding_correction(ids, weights, u, svh)
    torch.testing.assert_close(y[0], tables[0][ids[0]])
    mixed = e0 + sum(weights[1, t] * (tables[t] - e0) for t in range(T))
    torch.testing.assert_close(y[1], mixed[ids[1]])
    # position ids shared by the batch ([1, L]) give one row set per routed sample
    pos = torch.arange(3)[None]
    out = e0[pos] + embedding_correction(pos, weights, u, svh)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[0], tables[0][:3])
