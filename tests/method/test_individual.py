"""Individual: a lazy mapping task -> expert."""

from collections.abc import Mapping

import pytest
import torch

from fusion_bench.method.individual import Individual


def test_lazy_mapping_of_experts(pool, sds):
    experts = Individual().run(pool)
    assert isinstance(experts, Mapping)
    assert list(experts) == ["task0", "task1", "task2"]
    assert len(experts) == 3
    assert "task1" in experts and "_pretrained_" not in experts
    assert all(n == 0 for n in pool.loads.values())  # nothing loaded yet
    model = experts["task1"]
    ref = sds(pool)["task1"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert pool.loads == {"_pretrained_": 0, "task0": 0, "task1": 1, "task2": 0}


def test_unknown_task_is_key_error(pool):
    experts = Individual().run(pool)
    with pytest.raises(KeyError):
        experts["_pretrained_"]
    assert experts.get("nope") is None
