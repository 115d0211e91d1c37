"""TiesMerging: theta_0 + lambda * TIES(tau_1..tau_N) on an in-memory pool."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import float_keys
from fusion_bench.merging.ties import ties_merge
from fusion_bench.method.ties_merging import TiesMerging


def task_vectors(refs, n=3):
    base = refs["_pretrained_"]
    return [{k: refs[f"task{i}"][k] - base[k] for k in float_keys(base)} for i in range(n)]


@pytest.mark.parametrize("merge_func", ["sum", "mean", "max"])
@pytest.mark.parametrize("scope", ["global", "per_tensor"])
def test_equals_pure_ties(pool, sds, merge_func, scope):
    refs = sds(pool)
    method = TiesMerging(
        scaling_factor=0.7, threshold=40, threshold_scope=scope, merge_func=merge_func
    )
    out = method.run(pool).state_dict()
    merged = ties_merge(task_vectors(refs), keep=0.4, merge_func=merge_func, scope=scope)
    base = refs["_pretrained_"]
    for k, tv in merged.items():
        torch.testing.assert_close(out[k], base[k] + 0.7 * tv)
    assert int(out["1.num_batches_tracked"]) == 100


def test_keep_all_agreeing_sum_is_task_arithmetic(make_pool, sds):
    # With threshold 100 and experts whose task vectors all share signs, TIES-sum == TA.
    pool = make_pool(n_experts=1)
    from fusion_bench.method.task_arithmetic import TaskArithmetic

    ties = TiesMerging(threshold=100).run(pool).state_dict()
    ta = TaskArithmetic().run(pool).state_dict()
    for k in ties:
        torch.testing.assert_close(ties[k], ta[k])


def test_published_defaults():
    m = TiesMerging()
    assert (m.scaling_factor, m.threshold, m.threshold_scope, m.merge_func, m.drop_rate) == (
        0.3,
        20.0,
        "global",
        "sum",
        0.0,
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0}, {"threshold": 120}, {"merge_func": "median"}, {"threshold_scope": "row"}],
)
def test_invalid_hyperparameters(kwargs):
    with pytest.raises(FusionBenchError):
        TiesMerging(**kwargs)
