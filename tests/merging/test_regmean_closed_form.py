"""RegMean closed form: least squares on stacked data, alpha scaling, reductions, singularity."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.regmean import (
    reduce_non_diagonal,
    regmean_merge,
    regmean_solve,
    regmean_terms,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_closed_form_is_least_squares_of_the_stacked_regression():
    # alpha = 1: W = argmin sum_i ||X_i W^T - X_i W_i^T||^2, i.e. lstsq on [X_1; X_2]
    g = _gen(0)
    xs = [
        torch.randn(20, 4, generator=g, dtype=torch.float64),
        torch.randn(30, 4, generator=g, dtype=torch.float64),
    ]
    ws = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in xs]
    merged = regmean_merge(ws, [x.T @ x for x in xs], reduce_non_diagonal_ratio=1.0)
    a = torch.cat(xs)
    b = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    expected = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(merged, expected)
    assert merged.shape == (3, 4) and merged.dtype == torch.float64


def test_reduce_non_diagonal_by_hand():
    gram = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    torch.testing.assert_close(
        reduce_non_diagonal(gram, 0.5), torch.tensor([[4.0, 1.0], [1.0, 9.0]])
    )
    torch.testing.assert_close(
        reduce_non_diagonal(gram, 0.0), torch.tensor([[4.0, 0.0], [0.0, 9.0]])
    )
    assert reduce_non_diagonal(gram, 1.0) is gram
    with pytest.raises(FusionBenchError, match=r"\[0, 1\]"):
        reduce_non_diagonal(gram, 1.5)
    with pytest.raises(FusionBenchError, match="square"):
        reduce_non_diagonal(torch.ones(2, 3), 0.5)


def test_alpha_scaling_enters_the_closed_form():
    # two 2x2 layers with hand-picked Grams: alpha=0.5 halves the off-diagonals before solving
    g1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    g2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w2 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # G1' = [[2, .5], [.5, 2]], G2' = I; sum = [[3, .5], [.5, 3]]; sum G W^T = [[2], [.5]] + [[0], [1]]
    expected = torch.linalg.solve(
        torch.tensor([[3.0, 0.5], [0.5, 3.0]], dtype=torch.float64),
        torch.tensor([[2.0], [1.5]], dtype=torch.float64),
    ).T
    torch.testing.assert_close(regmean_merge([w1, w2], [g1, g2], 0.5), expected)


def test_alpha_zero_is_a_per_input_feature_weighted_average():
    g = _gen(1)
    ws = [torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(2)]
    grams = [torch.tensor([[1.0, 0.7], [0.7, 4.0]]), torch.tensor([[3.0, -0.2], [-0.2, 1.0]])]
    grams = [x.double() for x in grams]
    merged = regmean_merge(ws, grams, 0.0)
    d1, d2 = torch.tensor([1.0, 4.0]).double(), torch.tensor([3.0, 1.0]).double()
    torch.testing.assert_close(merged, (ws[0] * d1 + ws[1] * d2) / (d1 + d2))


def test_identical_grams_give_the_simple_average():
    g = _gen(2)
    x = torch.randn(50, 5, generator=g)
    gram = x.T @ x
    ws = [torch.randn(4, 5, generator=g) for _ in range(3)]
    for alpha in (1.0, 0.95, 0.0):
        merged = regmean_merge(ws, [gram] * 3, alpha)
        torch.testing.assert_close(merged, torch.stack(ws).mean(0), atol=1e-5, rtol=1e-5)
        assert merged.dtype == torch.float32


def test_common_scaling_of_the_grams_cancels():
    g = _gen(3)
    xs = [torch.randn(10, 3, generator=g) for _ in range(2)]
    ws = [torch.randn(2, 3, generator=g) for _ in range(2)]
    grams = [x.T @ x for x in xs]
    torch.testing.assert_close(
        regmean_merge(ws, grams, 0.9), regmean_merge(ws, [gr / 10 for gr in grams], 0.9)
    )


def test_streaming_terms_match_the_merge():
    g = _gen(4)
    xs = [torch.randn(10, 3, generator=g) for _ in range(3)]
    ws = [torch.randn(2, 3, generator=g) for _ in range(3)]
    terms = [regmean_terms(w, x.T @ x, 0.8) for w, x in zip(ws, xs, strict=True)]
    solved = regmean_solve(sum(t[0] for t in terms), sum(t[1] for t in terms))
    torch.testing.assert_close(solved.float(), regmean_merge(ws, [x.T @ x for x in xs], 0.8))


def test_singular_gram_falls_back_to_least_squares_with_a_warning():
    g = _gen(5)
    xs = [torch.randn(8, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    for x in xs:
        x[:, 2] = 0.0  # feature 2 never active: the summed Gram is singular
    ws = [torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="singular"):
        merged = regmean_merge(ws, [x.T @ x for x in xs], 1.0, name="layer.fc")
    assert torch.isfinite(merged).all()
    # the minimum-norm least-squares solution: column 2 (no data) is zero, the rest is exact
    a, b = torch.cat(xs), torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    torch.testing.assert_close(merged, (torch.linalg.pinv(a) @ b).T)
    assert torch.equal(merged[:, 2], torch.zeros(2, dtype=torch.float64))


def test_shape_errors():
    with pytest.raises(FusionBenchError, match="do not match"):
        regmean_terms(torch.zeros(2, 3), torch.eye(2), 1.0)
    with pytest.raises(FusionBenchError, match="one Gram matrix per weight"):
        regmean_merge([torch.zeros(2, 3)], [], 1.0)
