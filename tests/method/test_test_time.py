import math

import pytest
import torch

from fusion_bench.method.test_time import entropy_loss, infinite_batches


def test_entropy_of_uniform_and_one_hot():
    uniform = torch.zeros(2, 4)
    assert entropy_loss(uniform).item() == pytest.approx(math.log(4), rel=1e-6)
    confident = torch.tensor([[100.0, 0.0, 0.0]])
    assert entropy_loss(confident).item() < 1e-6


def test_entropy_hand_computed():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert abs(entropy_loss(logits).item() - expected) < 1e-6


def test_infinite_batches_cycles_and_is_seeded():
    data = torch.utils.data.TensorDataset(torch.arange(5.0), torch.arange(5))
    it1, it2 = infinite_batches(data, 2, seed=3), infinite_batches(data, 2, seed=3)
    seen = [next(it1)[0].tolist() for _ in range(6)]
    assert seen == [next(it2)[0].tolist() for _ in range(6)]
    assert sorted(sum(seen[:3], [])) == [0.0, 1.0, 2.0, 3.0, 4.0]  # one epoch = 3 batches
