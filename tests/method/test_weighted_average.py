"""WeightedAverage: sum_i w_i theta_i, optionally normalized."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.simple_average import SimpleAverage
from fusion_bench.method.weighted_average import WeightedAverage


@pytest.mark.parametrize("normalize", [True, False])
def test_weighted_average_closed_form(pool, sds, normalize):
    weights = [1.0, 2.0, 5.0]
    out = WeightedAverage(weights=weights, normalize=normalize).run(pool).state_dict()
    refs = sds(pool)
    w = [x / 8.0 for x in weights] if normalize else weights
    for k in ["0.weight", "1.running_mean", "3.bias"]:
        expected = sum(wi * refs[f"task{i}"][k] for i, wi in enumerate(w))
        torch.testing.assert_close(out[k], expected)


def test_no_weights_is_simple_average(pool):
    a = WeightedAverage().run(pool).state_dict()
    b = SimpleAverage().run(pool).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_must_match_experts(pool):
    with pytest.raises(FusionBenchError, match="2 weights for 3 experts"):
        WeightedAverage(weights=[0.5, 0.5]).run(pool)
