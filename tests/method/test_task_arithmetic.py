"""TaskArithmetic: theta_0 + lambda * sum_i tau_i, streamed one expert at a time."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.task_arithmetic import TaskArithmetic


def closed_form(refs, lam, n=3):
    base = refs["_pretrained_"]
    return {
        k: base[k] + lam * sum(refs[f"task{i}"][k] - base[k] for i in range(n))
        for k in base
        if base[k].is_floating_point()
    }


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_streaming_equals_closed_form(pool, sds, lam):
    model = TaskArithmetic(scaling_factor=lam).run(pool)
    out = model.state_dict()
    for k, v in closed_form(sds(pool), lam).items():
        torch.testing.assert_close(out[k], v)
    assert int(out["1.num_batches_tracked"]) == 100  # integer buffer from the pretrained model
    assert all(n == 1 for n in pool.loads.values())  # every model loaded exactly once


def test_mean_scaling_is_simple_average(pool, sds):
    out = TaskArithmetic(scaling_factor="1/N").run(pool).state_dict()
    refs = sds(pool)
    expected = torch.stack([refs[f"task{i}"]["0.weight"] for i in range(3)]).mean(0)
    torch.testing.assert_close(out["0.weight"], expected)


def test_needs_pretrained(make_pool):
    with pytest.raises(FusionBenchError, match="_pretrained_"):
        TaskArithmetic().run(make_pool(pretrained=False))


def test_mismatched_shape_names_model_and_key(make_pool):
    bad = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 5)
    )
    with pytest.raises(FusionBenchError, match=r"'bad'.*'3\.weight'.*shape"):
        TaskArithmetic().run(make_pool(extra={"bad": bad}))


def test_missing_key_names_model_and_key(make_pool):
    bad = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(FusionBenchError, match=r"'bad' lacks key"):
        TaskArithmetic().run(make_pool(extra={"bad": bad}))


def test_invalid_hyperparameters():
    with pytest.raises(FusionBenchError, match="scaling_factor"):
        TaskArithmetic(scaling_factor="half")
    with pytest.raises(FusionBenchError, match="drop_rate"):
        TaskArithmetic(drop_rate=1.0)
