"""Dummy: returns one model of the pool unchanged."""

import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.dummy import Dummy


def test_returns_pretrained_by_default(pool, sds):
    model = Dummy().run(pool)
    ref = sds(pool)["_pretrained_"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_returns_named_expert(pool, sds):
    model = Dummy(model_name="task1").run(pool)
    ref = sds(pool)["task1"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_unknown_name(pool):
    with pytest.raises(FusionBenchError, match="nope"):
        Dummy(model_name="nope").run(pool)
