"""Fisher merging: weighted averages by hand, and the diagonal Fisher of softmax regression."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.fisher import diagonal_fisher_sum, fisher_norm, fisher_weighted_average


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _models(thetas, fishers, extra=None):
    out = []
    for i, (t, f) in enumerate(zip(thetas, fishers, strict=True)):
        sd = {"w": t, **(extra[i] if extra else {})}
        out.append((f"m{i}", sd, {"w": f}))
    return out


# -- the weighted average ---------------------------------------------------------------------
def test_equal_fishers_give_the_simple_average():
    g = _gen(0)
    thetas = [torch.randn(3, 4, generator=g) for _ in range(3)]
    fisher = torch.rand(3, 4, generator=g)
    merged = fisher_weighted_average(_models(thetas, [fisher] * 3))
    torch.testing.assert_close(merged["w"], torch.stack(thetas).mean(0))


def test_one_dominating_fisher_gives_that_models_weights():
    g = _gen(1)
    thetas = [torch.randn(5, generator=g) for _ in range(3)]
    fishers = [torch.zeros(5), torch.ones(5), torch.zeros(5)]
    exact = fisher_weighted_average(_models(thetas, fishers), minimal_fisher_weight=0.0)
    assert torch.equal(exact["w"], thetas[1])
    floored = fisher_weighted_average(_models(thetas, fishers), minimal_fisher_weight=1e-6)
    torch.testing.assert_close(floored["w"], thetas[1], atol=1e-5, rtol=0)


def test_two_parameters_by_hand():
    thetas = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])]
    fishers = [torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])]
    merged = fisher_weighted_average(_models(thetas, fishers), minimal_fisher_weight=0.0)
    # [(1*1 + 3*3) / 4, (3*2 + 1*6) / 4]
    torch.testing.assert_close(merged["w"], torch.tensor([2.5, 3.0]))
    scaled = fisher_weighted_average(
        _models(thetas, fishers), coefficients=[2.0, 1.0], minimal_fisher_weight=0.0
    )
    # [(2*1*1 + 1*3*3) / (2 + 3), (2*3*2 + 1*1*6) / (6 + 1)]
    torch.testing.assert_close(scaled["w"], torch.tensor([11 / 5, 18 / 7]))
    # the floor: eps = 1 added to every entry -> [(2*1 + 4*3) / 6, (4*2 + 2*6) / 6]
    floored = fisher_weighted_average(_models(thetas, fishers), minimal_fisher_weight=1.0)
    torch.testing.assert_close(floored["w"], torch.tensor([14 / 6, 20 / 6]))


def test_normalized_fishers_ignore_each_models_scale():
    g = _gen(2)
    thetas = [torch.randn(6, generator=g) for _ in range(2)]
    fishers = [torch.rand(6, generator=g) for _ in range(2)]
    ref = fisher_weighted_average(_models(thetas, fishers), None, 0.0, True)
    rescaled = fisher_weighted_average(
        _models(thetas, [fishers[0] * 1000, fishers[1]]), None, 0.0, True
    )
    torch.testing.assert_close(ref["w"], rescaled["w"])
    # by hand: weights F_i / ||F_i||
    w0, w1 = fishers[0] / fisher_norm({"w": fishers[0]}), fishers[1] / fishers[1].norm()
    torch.testing.assert_close(ref["w"], (w0 * thetas[0] + w1 * thetas[1]) / (w0 + w1))


def test_keys_without_fisher_are_averaged_and_integer_buffers_copied():
    thetas = [torch.tensor([1.0]), torch.tensor([3.0])]
    extra = [
        {"running_mean": torch.tensor([0.0, 2.0]), "steps": torch.tensor(7)},
        {"running_mean": torch.tensor([2.0, 4.0]), "steps": torch.tensor(9)},
    ]
    merged = fisher_weighted_average(
        _models(thetas, [torch.tensor([3.0]), torch.tensor([1.0])], extra),
        minimal_fisher_weight=0.0,
    )
    torch.testing.assert_close(merged["w"], torch.tensor([1.5]))
    torch.testing.assert_close(merged["running_mean"], torch.tensor([1.0, 3.0]))
    assert merged["steps"].item() == 7


def test_half_precision_is_accumulated_in_float32_and_cast_back():
    thetas = [torch.tensor([1.0, 2.0]).half(), torch.tensor([3.0, 6.0]).half()]
    merged = fisher_weighted_average(_models(thetas, [torch.ones(2), torch.ones(2)]))
    assert merged["w"].dtype == torch.float16
    torch.testing.assert_close(merged["w"], torch.tensor([2.0, 4.0]).half())


def test_errors():
    t, f = torch.ones(2), torch.ones(2)
    with pytest.raises(FusionBenchError, match="no models"):
        fisher_weighted_average([])
    with pytest.raises(FusionBenchError, match="2 models but 3"):
        fisher_weighted_average(_models([t, t], [f, f]), coefficients=[1, 1, 1])
    with pytest.raises(FusionBenchError, match="not all zero"):
        fisher_weighted_average(_models([t, t], [f, f]), coefficients=[0, 0])
    with pytest.raises(FusionBenchError, match="different keys"):
        fisher_weighted_average(
            [("a", {"w": t, "v": t}, {"w": f}), ("b", {"w": t, "v": t}, {"v": f})]
        )
    with pytest.raises(FusionBenchError, match="shape"):
        fisher_weighted_average([("a", {"w": t}, {"w": torch.ones(3)})])
    with pytest.raises(FusionBenchError, match="zero Fisher"):
        fisher_weighted_average(_models([t, t], [0 * f, 0 * f]), minimal_fisher_weight=0.0)


# -- the diagonal Fisher ----------------------------------------------------------------------
C, D, N = 3, 4, 6


@pytest.fixture
def softmax_regression():
    g = _gen(3)
    params = {"W": torch.randn(C, D, generator=g), "b": torch.randn(C, generator=g)}
    x = torch.randn(N, D, generator=g)

    def logits_fn(p, inputs):
        return inputs @ p["W"].T + p["b"]

    return logits_fn, params, x


def test_expected_fisher_of_softmax_regression_is_analytic(softmax_regression):
    # d log p_y / dW_kj = (e_y - p)_k x_j, and sum_y p_y (e_y - p)_k^2 = p_k (1 - p_k)
    logits_fn, params, x = softmax_regression
    fisher = diagonal_fisher_sum(logits_fn, params, x, "expected", chunk_size=5)
    p = torch.softmax(logits_fn(params, x), -1)
    v = p * (1 - p)  # [N, C]
    torch.testing.assert_close(fisher["W"], v.T @ x.square())
    torch.testing.assert_close(fisher["b"], v.sum(0))
    # the same as the explicit expectation sum_y p_y (e_y - p)_k^2 x_j^2
    eye = torch.eye(C)
    explicit = sum(
        p[n, y] * torch.outer((eye[y] - p[n]).square(), x[n].square())
        for n in range(N)
        for y in range(C)
    )
    torch.testing.assert_close(fisher["W"], explicit)


def test_sampled_fisher_uses_labels_drawn_from_the_model(softmax_regression):
    logits_fn, params, x = softmax_regression
    fisher = diagonal_fisher_sum(logits_fn, params, x, "sampled", _gen(7), chunk_size=4)
    p = torch.softmax(logits_fn(params, x), -1)
    y = torch.multinomial(p, 1, generator=_gen(7)).squeeze(1)
    r = torch.nn.functional.one_hot(y, C).float() - p  # [N, C]
    torch.testing.assert_close(fisher["W"], r.square().T @ x.square())
    torch.testing.assert_close(fisher["b"], r.square().sum(0))


def test_sampled_fisher_is_unbiased(softmax_regression):
    logits_fn, params, x = softmax_regression
    expected = diagonal_fisher_sum(logits_fn, params, x, "expected")
    g = _gen(8)
    draws = [diagonal_fisher_sum(logits_fn, params, x, "sampled", g)["W"] for _ in range(300)]
    torch.testing.assert_close(torch.stack(draws).mean(0), expected["W"], atol=0.05, rtol=0.1)


class _Stubborn(torch.autograd.Function):
    """Identity whose backward has data-dependent control flow: it cannot be vmapped."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        if float(grad.abs().sum()) < 0:
            raise AssertionError
        return grad


def test_unbatchable_backward_falls_back_to_one_pass_per_label(softmax_regression):
    logits_fn, params, x = softmax_regression

    def stubborn(p, inputs):
        return _Stubborn.apply(logits_fn(p, inputs))

    for chunk_size in (2, 16):
        with pytest.warns(RuntimeWarning, match="one backward pass per label"):
            fisher = diagonal_fisher_sum(stubborn, params, x, "expected", chunk_size=chunk_size)
        reference = diagonal_fisher_sum(logits_fn, params, x, "expected")
        for k in params:
            torch.testing.assert_close(fisher[k], reference[k])


def test_parameters_the_logits_ignore_get_zero_fisher(softmax_regression):
    logits_fn, params, x = softmax_regression
    fisher = diagonal_fisher_sum(logits_fn, {**params, "unused": torch.ones(2)}, x)
    assert torch.equal(fisher["unused"], torch.zeros(2))


def test_bad_label_mode():
    with pytest.raises(FusionBenchError, match="expected"):
        diagonal_fisher_sum(lambda p, x: x, {}, torch.zeros(1, 2), "empirical")
