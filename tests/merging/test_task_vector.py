"""Task vectors and task arithmetic on hand-computed tensors."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.task_arithmetic import (
    apply_task_vector,
    compute_dtype,
    sum_task_vectors,
    task_vector,
)

BASE = {"w": torch.tensor([1.0, 2.0, 3.0]), "ids": torch.tensor([0, 1, 2])}
FT1 = {"w": torch.tensor([2.0, 2.0, 1.0]), "ids": torch.tensor([5, 5, 5])}
FT2 = {"w": torch.tensor([1.0, 4.0, 3.5]), "ids": torch.tensor([7, 7, 7])}


def test_task_vector_is_difference_over_float_keys():
    tv = task_vector(FT1, BASE, "ft1")
    assert set(tv) == {"w"}  # integer buffer is not part of a task vector
    torch.testing.assert_close(tv["w"], torch.tensor([1.0, 0.0, -2.0]))


def test_task_arithmetic_closed_form():
    tvs = [task_vector(FT1, BASE, "ft1"), task_vector(FT2, BASE, "ft2")]
    total = sum_task_vectors(iter(tvs))  # any iterable, consumed once
    torch.testing.assert_close(total["w"], torch.tensor([1.0, 2.0, -1.5]))
    merged = apply_task_vector(BASE, total, 0.5)
    # theta_0 + 0.5 * [1, 2, -1.5]
    torch.testing.assert_close(merged["w"], torch.tensor([1.5, 3.0, 2.25]))
    assert torch.equal(merged["ids"], BASE["ids"])  # integer buffers from the base


def test_sum_does_not_modify_inputs():
    tvs = [{"w": torch.ones(2)}, {"w": torch.ones(2)}]
    sum_task_vectors(tvs)
    assert torch.equal(tvs[0]["w"], torch.ones(2))


def test_missing_key_names_model_and_key():
    with pytest.raises(FusionBenchError, match=r"ft1.*'w'"):
        task_vector({"ids": FT1["ids"]}, BASE, "ft1")


def test_extra_key_names_model_and_key():
    with pytest.raises(FusionBenchError, match=r"ft1.*'extra'"):
        task_vector({**FT1, "extra": torch.zeros(1)}, BASE, "ft1")


def test_shape_mismatch_names_model_and_key():
    with pytest.raises(FusionBenchError, match=r"ft1.*'w'.*shape"):
        task_vector({"w": torch.zeros(4), "ids": FT1["ids"]}, BASE, "ft1")


def test_sum_rejects_mismatched_task_vectors():
    with pytest.raises(FusionBenchError, match="'w' is missing"):
        sum_task_vectors([{"w": torch.ones(2)}, {"v": torch.ones(2)}])
    with pytest.raises(FusionBenchError, match="shape"):
        sum_task_vectors([{"w": torch.ones(2)}, {"w": torch.ones(3)}])
    with pytest.raises(FusionBenchError, match="no task vectors"):
        sum_task_vectors([])


def test_apply_rejects_incomplete_task_vector():
    with pytest.raises(FusionBenchError, match="'w'"):
        apply_task_vector(BASE, {}, 0.3)


def test_half_precision_accumulates_in_float32_and_casts_back():
    assert compute_dtype(torch.bfloat16) == torch.float32
    assert compute_dtype(torch.float64) == torch.float64
    base = {"w": torch.tensor([1.0, 256.0], dtype=torch.bfloat16)}
    ft = {"w": torch.tensor([1.0078125, 256.0], dtype=torch.bfloat16)}
    tv = task_vector(ft, base)
    assert tv["w"].dtype == torch.float32
    merged = apply_task_vector(base, tv, 1.0)
    assert merged["w"].dtype == torch.bfloat16
    assert torch.equal(merged["w"], ft["w"])
