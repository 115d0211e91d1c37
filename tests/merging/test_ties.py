"""TIES-Merging maths on hand-computed tensors."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.ties import (
    disjoint_merge,
    elect_sign,
    num_kept,
    ties_merge,
    topk_threshold,
    trim,
)

T1 = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1])
T2 = torch.tensor([-1.5, 1.0, -0.2, 2.0, 0.3])
T3 = torch.tensor([0.4, -0.5, 1.0, -4.0, 0.2])
# Keeping 40% of 5 entries keeps 2 per vector:
TRIMMED = [
    torch.tensor([0.0, -2.0, 0.0, 3.0, 0.0]),  # |3.0|, |-2.0|
    torch.tensor([-1.5, 0.0, 0.0, 2.0, 0.0]),  # |2.0|, |-1.5|
    torch.tensor([0.0, 0.0, 1.0, -4.0, 0.0]),  # |-4.0|, |1.0|
]
# Column sums: [-1.5, -2, 1, 1, 0] -> signs [-, -, +, +, 0]; the sign of the sum of signs is 0,
# so the last entry (no candidate at all) stays 0.
SIGN = torch.tensor([-1.0, -1.0, 1.0, 1.0, 0.0])


def test_num_kept_rounds_and_keeps_at_least_one():
    assert num_kept(5, 0.4) == 2
    assert num_kept(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert num_kept(5, 0.01) == 1
    assert num_kept(4, 1.0) == 4
    assert num_kept(0, 0.5) == 0


def test_trim_keeps_top_k_by_magnitude():
    for tv, expected in zip([T1, T2, T3], TRIMMED, strict=True):
        out = trim({"w": tv}, keep=0.4)
        torch.testing.assert_close(out["w"], expected)


def test_elect_sign_by_sum():
    torch.testing.assert_close(elect_sign(torch.stack(TRIMMED)), SIGN)


def test_disjoint_merges_by_hand():
    stacked = torch.stack(TRIMMED)
    # Index 3: elected +, candidates 3.0 and 2.0 agree; -4.0 is dropped.
    torch.testing.assert_close(
        disjoint_merge(stacked, SIGN, "mean"), torch.tensor([-1.5, -2.0, 1.0, 2.5, 0.0])
    )
    torch.testing.assert_close(
        disjoint_merge(stacked, SIGN, "sum"), torch.tensor([-1.5, -2.0, 1.0, 5.0, 0.0])
    )
    torch.testing.assert_close(
        disjoint_merge(stacked, SIGN, "max"), torch.tensor([-1.5, -2.0, 1.0, 3.0, 0.0])
    )


def test_ties_merge_end_to_end():
    tvs = ({"w": t} for t in (T1, T2, T3))  # a generator: trimmed as it is consumed
    merged = ties_merge(tvs, keep=0.4, merge_func="mean")
    torch.testing.assert_close(merged["w"], torch.tensor([-1.5, -2.0, 1.0, 2.5, 0.0]))


def test_zero_sum_takes_majority_sign():
    # Column 0 sums to 0; the elected signs of the other columns are +, + -> majority +.
    stacked = torch.tensor([[1.0, 1.0, 2.0], [-1.0, 1.0, 2.0]])
    sign = elect_sign(stacked)
    torch.testing.assert_close(sign, torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(disjoint_merge(stacked, sign, "mean"), torch.tensor([1.0, 1.0, 2.0]))


def test_global_versus_per_tensor_threshold():
    tv = {"a": torch.tensor([10.0, -9.0]), "b": torch.tensor([1.0, 2.0])}
    glob = trim(tv, keep=0.5, scope="global")  # top 2 of all 4 entries: both of "a"
    torch.testing.assert_close(glob["a"], torch.tensor([10.0, -9.0]))
    torch.testing.assert_close(glob["b"], torch.tensor([0.0, 0.0]))
    per = trim(tv, keep=0.5, scope="per_tensor")  # top 1 of each tensor
    torch.testing.assert_close(per["a"], torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(per["b"], torch.tensor([0.0, 2.0]))


def test_threshold_matches_sort_on_large_tensor():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g)
    k = num_kept(x.numel(), 0.2)
    expected = x.abs().sort(descending=True).values[k - 1]
    assert topk_threshold(x, k) == expected
    out = trim({"x": x.reshape(400, 500)}, keep=0.2)["x"]
    assert int((out != 0).sum()) == k


def test_keep_everything_is_identity():
    out = trim({"w": T1}, keep=1.0)
    torch.testing.assert_close(out["w"], T1)


def test_invalid_arguments():
    with pytest.raises(FusionBenchError):
        trim({"w": T1}, keep=0.0)
    with pytest.raises(FusionBenchError):
        trim({"w": T1}, keep=0.5, scope="layer")
    with pytest.raises(FusionBenchError):
        ties_merge([{"w": T1}], keep=0.5, merge_func="median")
    with pytest.raises(FusionBenchError, match="no task vectors"):
        ties_merge([], keep=0.5)
    with pytest.raises(FusionBenchError, match="shape"):
        ties_merge([{"w": T1}, {"w": T1[:3]}], keep=0.5)
