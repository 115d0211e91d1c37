"""Concrete (relaxed Bernoulli) mask maths."""

import math

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.concrete import (
    bernoulli_mask,
    concrete_sample,
    eval_mask,
    hard_mask,
    logistic_noise,
    relaxed_bernoulli,
    rescale_mask,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_concrete_sample_formula():
    logits = torch.tensor([0.0, 1.0, -2.0])
    noise = torch.tensor([0.5, -1.0, 3.0])
    expected = torch.tensor(
        [
            1 / (1 + math.exp(-(lo + n) / 0.5))
            for lo, n in zip([0, 1, -2], [0.5, -1, 3], strict=True)
        ]
    )
    torch.testing.assert_close(concrete_sample(logits, noise, 0.5), expected)


def test_logistic_noise_is_seeded_finite_and_logistic():
    a, b = logistic_noise((100_000,), _gen(1)), logistic_noise((100_000,), _gen(1))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    # Logistic(0, 1): mean 0, variance pi^2 / 3
    assert abs(a.mean().item()) < 0.03
    assert abs(a.var().item() - math.pi**2 / 3) < 0.1


@pytest.mark.parametrize("logit", [-1.5, 0.0, 0.7, 2.0])
def test_low_temperature_samples_are_binary_with_p_sigmoid(logit):
    logits = torch.full((200_000,), logit)
    m = relaxed_bernoulli(logits, temperature=1e-4, generator=_gen(3))
    binary = (m < 1e-3) | (m > 1 - 1e-3)
    assert binary.float().mean().item() > 0.999
    assert abs(m.round().mean().item() - torch.sigmoid(torch.tensor(logit)).item()) < 0.005
    # the T -> 0 limit is the Bernoulli sample drawn from the same noise
    assert torch.equal(m.round(), bernoulli_mask(logits, _gen(3)))


def test_zero_logit_sample_is_symmetric():
    # g is symmetric around 0, so sigmoid(g / T) has mean 1/2 at any temperature
    m = relaxed_bernoulli(torch.zeros(200_000), 1.0, _gen(0))
    assert abs(m.mean().item() - 0.5) < 0.005


def test_gradient_reaches_logits():
    logits = torch.zeros(5, requires_grad=True)
    relaxed_bernoulli(logits, 0.5, _gen()).sum().backward()
    assert logits.grad is not None and (logits.grad > 0).all()


def test_hard_and_expected_masks():
    logits = torch.tensor([-1.0, 0.0, 2.0])
    assert hard_mask(logits).tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(eval_mask(logits, "expected", 0.5, _gen()), torch.sigmoid(logits))
    assert eval_mask(logits, "hard", 0.5, _gen()).tolist() == [0.0, 0.0, 1.0]
    assert set(eval_mask(logits, "discrete", 0.5, _gen()).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(
        eval_mask(logits, "sample", 0.5, _gen(4)), relaxed_bernoulli(logits, 0.5, _gen(4))
    )
    with pytest.raises(FusionBenchError, match="eval_mask"):
        eval_mask(logits, "soft", 0.5, _gen())


def test_all_ones_mask_for_large_logits():
    ones = relaxed_bernoulli(torch.full((1000,), 100.0), 0.5, _gen())
    assert torch.equal(ones, torch.ones(1000))
    assert torch.equal(rescale_mask(ones), ones)


def test_rescale_to_mean_one_and_zero_guard():
    m = torch.tensor([0.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(rescale_mask(m), torch.tensor([0.0, 2.0, 2.0, 0.0]))
    assert torch.equal(rescale_mask(torch.zeros(3)), torch.zeros(3))


def test_bad_temperature():
    with pytest.raises(FusionBenchError, match="temperature"):
        concrete_sample(torch.zeros(1), torch.zeros(1), 0.0)
