"""Weighted averages of state dicts."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.average import normalize_weights, weighted_sum

A = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(1)}
B = {"w": torch.tensor([4.0, 0.0]), "n": torch.tensor(2)}


def test_normalized_weights_by_hand():
    w = normalize_weights([1.0, 3.0])
    assert w == [0.25, 0.75]
    out = weighted_sum([("a", A), ("b", B)], w)
    torch.testing.assert_close(out["w"], torch.tensor([3.0, 1.0]))
    assert int(out["n"]) == 1  # integer buffers from the first model


def test_unnormalized_weights():
    out = weighted_sum([("a", A), ("b", B)], [1.0, 3.0])
    torch.testing.assert_close(out["w"], torch.tensor([12.0, 4.0]))


def test_inputs_are_not_modified():
    a = {"w": torch.tensor([1.0, 2.0])}
    weighted_sum([("a", a), ("b", {"w": torch.ones(2)})], [0.5, 0.5])
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))


def test_errors():
    with pytest.raises(FusionBenchError, match="sum to zero"):
        normalize_weights([1.0, -1.0])
    with pytest.raises(FusionBenchError, match="weights"):
        weighted_sum([("a", A), ("b", B)], [1.0])
    with pytest.raises(FusionBenchError, match="weights"):
        weighted_sum([("a", A)], [0.5, 0.5])
    with pytest.raises(FusionBenchError, match=r"'b'.*'w'"):
        weighted_sum([("a", A), ("b", {"w": torch.zeros(3), "n": B["n"]})], [0.5, 0.5])
    with pytest.raises(FusionBenchError, match=r"'b'.*'n'"):
        weighted_sum([("a", A), ("b", {"w": B["w"]})], [0.5, 0.5])
