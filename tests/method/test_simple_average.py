"""SimpleAverage: mean of the experts' weights, streamed."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.simple_average import SimpleAverage


def test_mean_of_experts_without_pretrained(make_pool, sds):
    pool = make_pool(n_experts=3, pretrained=False)
    model = SimpleAverage().run(pool)
    refs = sds(pool)
    out = model.state_dict()
    for k, v in out.items():
        if v.is_floating_point():
            expected = torch.stack([refs[f"task{i}"][k] for i in range(3)]).mean(0)
            torch.testing.assert_close(v, expected)
    assert int(out["1.num_batches_tracked"]) == 0  # integer buffer of the first expert
    assert all(n == 1 for n in pool.loads.values())  # each expert loaded once


def test_ignores_pretrained(pool, sds):
    out = SimpleAverage().run(pool).state_dict()
    refs = sds(pool)
    expected = torch.stack([refs[f"task{i}"]["0.weight"] for i in range(3)]).mean(0)
    torch.testing.assert_close(out["0.weight"], expected)
    assert pool.loads["_pretrained_"] == 0


def test_mismatched_expert_is_an_error(make_pool):
    pool = make_pool(extra={"bad": torch.nn.Sequential(torch.nn.Linear(4, 3))})
    with pytest.raises(FusionBenchError, match=r"'bad'.*'1\.weight'"):
        SimpleAverage().run(pool)


def test_empty_pool(make_pool):
    with pytest.raises(FusionBenchError, match="expert"):
        SimpleAverage().run(make_pool(n_experts=0))
