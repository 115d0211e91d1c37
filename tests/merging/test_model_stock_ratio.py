"""Model Stock ratio and merge against hand computations."""

import math

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.model_stock import (
    mean_pairwise_cosine,
    model_stock_merge,
    model_stock_ratio,
)


def test_ratio_by_hand():
    # t = N c / (1 + (N - 1) c)
    assert float(model_stock_ratio(0.5, 2)) == pytest.approx(2 * 0.5 / 1.5)
    assert float(model_stock_ratio(0.2, 8)) == pytest.approx(1.6 / 2.4)
    assert float(model_stock_ratio(1.0, 5)) == pytest.approx(1.0)
    assert float(model_stock_ratio(-0.3, 3)) == 0.0  # negative correlation: clamped to w_0
    with pytest.raises(FusionBenchError):
        model_stock_ratio(0.5, 1)


def test_two_experts_by_hand():
    base = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(3)}
    e1 = {"w": torch.tensor([2.0, 1.0]), "n": torch.tensor(4)}  # tau_1 = [1, 0]
    e2 = {"w": torch.tensor([2.0, 2.0]), "n": torch.tensor(5)}  # tau_2 = [1, 1]
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    merged, ratios = model_stock_merge(base, [("e1", e1), ("e2", e2)])
    assert ratios["w"] == pytest.approx(t)
    # w_H = t * w_avg + (1 - t) * w_0, w_avg = [2, 1.5]
    expected = t * torch.tensor([2.0, 1.5]) + (1 - t) * torch.tensor([1.0, 1.0])
    torch.testing.assert_close(merged["w"], expected)
    assert int(merged["n"]) == 3  # integer buffers from the base


def test_streaming_cosine_equals_direct_pairwise_mean():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(6, 5, generator=g), "b": torch.randn(5, generator=g)}
    common = {k: torch.randn(v.shape, generator=g) for k, v in base.items()}
    experts = [
        {k: base[k] + common[k] + 0.5 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        for _ in range(4)
    ]
    # a zero task vector in one layer: cosine 0 with everything
    experts[3]["b"] = base["b"].clone()
    merged, ratios = model_stock_merge(base, [(f"e{i}", e) for i, e in enumerate(experts)])
    for k in base:
        taus = [e[k] - base[k] for e in experts]
        cos = mean_pairwise_cosine(taus)
        t = float(model_stock_ratio(cos, 4))
        assert ratios[k] == pytest.approx(t, abs=1e-6)
        expected = base[k] + t * torch.stack(taus).mean(0)
        torch.testing.assert_close(merged[k], expected)


def test_mean_pairwise_cosine_by_hand():
    v = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])]
    # pairs: 0, 1/sqrt2, 1/sqrt2
    assert float(mean_pairwise_cosine(v)) == pytest.approx(2 / math.sqrt(2) / 3)


def test_needs_two_experts_and_compatible_keys():
    base = {"w": torch.zeros(2)}
    with pytest.raises(FusionBenchError, match="at least 2"):
        model_stock_merge(base, [("e1", {"w": torch.ones(2)})])
    with pytest.raises(FusionBenchError, match=r"e2.*'w'"):
        model_stock_merge(base, [("e1", {"w": torch.ones(2)}), ("e2", {"w": torch.ones(3)})])
