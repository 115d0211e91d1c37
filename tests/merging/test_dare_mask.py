"""DARE drop-and-rescale with a fixed generator."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.dare import dare, dare_state_dict


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_survivors_rescaled_exactly_and_drop_fraction_about_p():
    p = 0.5
    x = torch.rand(1_000_000, generator=gen(1)) + 0.5  # no zeros, so zeros mark dropped entries
    out = dare(x, p, gen())
    kept = out != 0
    assert torch.equal(out[kept], x[kept] / (1 - p))
    assert abs(1 - kept.float().mean().item() - p) < 0.005


def test_other_drop_rate_and_no_rescale():
    x = torch.ones(100_000)
    out = dare(x, 0.9, gen())
    assert abs((out == 0).float().mean().item() - 0.9) < 0.01
    assert torch.allclose(out[out != 0], torch.tensor(10.0))
    out = dare(x, 0.9, gen(), rescale=False)
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_same_seed_same_mask_and_input_untouched():
    x = torch.randn(1000)
    x_before = x.clone()
    assert torch.equal(dare(x, 0.5, gen(3)), dare(x, 0.5, gen(3)))
    assert not torch.equal(dare(x, 0.5, gen(3)), dare(x, 0.5, gen(4)))
    assert torch.equal(x, x_before)


def test_state_dict_draws_masks_in_key_order():
    tv = {"a": torch.ones(50), "b": torch.ones(50)}
    g = gen(7)
    expected = {"a": dare(tv["a"], 0.5, g), "b": dare(tv["b"], 0.5, g)}
    out = dare_state_dict(tv, 0.5, gen(7))
    assert all(torch.equal(out[k], expected[k]) for k in tv)


def test_zero_drop_rate_is_identity():
    x = torch.randn(10)
    assert torch.equal(dare(x, 0.0, gen()), x)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_drop_rate(p):
    with pytest.raises(FusionBenchError, match="drop_rate"):
        dare(torch.ones(3), p, gen())
