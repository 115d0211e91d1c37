"""ModelStock on an in-memory pool."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.model_stock import mean_pairwise_cosine, model_stock_ratio
from fusion_bench.method.model_stock import ModelStock


def test_per_layer_interpolation(pool, sds):
    method = ModelStock()
    out = method.run(pool).state_dict()
    refs = sds(pool)
    base = refs["_pretrained_"]
    for k, w0 in base.items():
        if not w0.is_floating_point():
            assert torch.equal(out[k], w0)
            continue
        taus = [refs[f"task{i}"][k] - w0 for i in range(3)]
        t = float(model_stock_ratio(mean_pairwise_cosine(taus), 3))
        assert method.ratios[k] == pytest.approx(t, abs=1e-6)
        w_avg = torch.stack([refs[f"task{i}"][k] for i in range(3)]).mean(0)
        torch.testing.assert_close(out[k], t * w_avg + (1 - t) * w0)
    report = method.extra_report()
    assert 0.0 <= report["ratio_min"] <= report["ratio_mean"] <= report["ratio_max"] <= 1.0


def test_needs_two_experts(make_pool):
    with pytest.raises(FusionBenchError, match="at least 2"):
        ModelStock().run(make_pool(n_experts=1))
