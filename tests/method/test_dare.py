"""DARE variants: the task-arithmetic and TIES classes with drop_rate > 0."""

import torch

from fusion_bench.merging.dare import dare_state_dict
from fusion_bench.merging.state_dict import float_keys
from fusion_bench.merging.ties import ties_merge
from fusion_bench.method.simple_average import SimpleAverage
from fusion_bench.method.task_arithmetic import TaskArithmetic
from fusion_bench.method.ties_merging import TiesMerging


def dare_task_vectors(refs, p, seed, n=3):
    """Reference: the masks are drawn expert by expert, key by key, from one generator."""
    base = refs["_pretrained_"]
    g = torch.Generator().manual_seed(seed)
    return [
        dare_state_dict({k: refs[f"task{i}"][k] - base[k] for k in float_keys(base)}, p, g)
        for i in range(n)
    ]


def test_dare_task_arithmetic_by_hand(pool, sds):
    refs = sds(pool)
    out = TaskArithmetic(scaling_factor=0.3, drop_rate=0.5, seed=3).run(pool).state_dict()
    tvs = dare_task_vectors(refs, 0.5, 3)
    base = refs["_pretrained_"]
    for k in tvs[0]:
        torch.testing.assert_close(out[k], base[k] + 0.3 * sum(tv[k] for tv in tvs))


def test_dare_is_reproducible_and_seeded(make_pool):
    a = TaskArithmetic(drop_rate=0.5, seed=0).run(make_pool()).state_dict()
    b = TaskArithmetic(drop_rate=0.5, seed=0).run(make_pool()).state_dict()
    c = TaskArithmetic(drop_rate=0.5, seed=1).run(make_pool()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_dare_simple_average_without_drop_is_simple_average(pool):
    # mean_i(theta_0 + tau_i) = theta_0 + (1/N) sum_i tau_i
    a = TaskArithmetic(scaling_factor="1/N", drop_rate=0.0).run(pool).state_dict()
    b = SimpleAverage().run(pool).state_dict()
    for k, v in a.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, b[k])


def test_dare_simple_average_by_hand(pool, sds):
    refs = sds(pool)
    out = TaskArithmetic(scaling_factor="1/N", drop_rate=0.5).run(pool).state_dict()
    tvs = dare_task_vectors(refs, 0.5, 0)
    base = refs["_pretrained_"]
    for k in tvs[0]:
        torch.testing.assert_close(out[k], torch.stack([base[k] + tv[k] for tv in tvs]).mean(0))


def test_dare_ties_by_hand(pool, sds):
    refs = sds(pool)
    out = TiesMerging(drop_rate=0.5, threshold=20).run(pool).state_dict()
    merged = ties_merge(dare_task_vectors(refs, 0.5, 0), keep=0.2, merge_func="sum")
    base = refs["_pretrained_"]
    for k, tv in merged.items():
        torch.testing.assert_close(out[k], base[k] + 0.3 * tv)
