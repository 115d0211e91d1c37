"""fusion_bench.utils.distributed with one process: every collective is the identity.

The two-process behaviour (gloo) is tested in tests/integration/test_scale_out.py.
"""

import pytest
import torch

from fusion_bench.utils.distributed import (
    all_gather_objects,
    average_gradients,
    broadcast_tensors,
    check_same_across_ranks,
    rank_and_world_size,
)


@pytest.fixture(scope="module")
def fabric():
    from lightning.fabric import Fabric

    return Fabric(accelerator="cpu", devices=1)


def test_one_process_collectives_change_nothing(fabric):
    assert rank_and_world_size(None) == (0, 1)
    assert rank_and_world_size(fabric) == (0, 1)
    assert all_gather_objects(fabric, {"a": [1]}) == [{"a": [1]}]
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    p.grad = torch.tensor([0.5, -0.5])
    q = torch.nn.Parameter(torch.zeros(3))  # no gradient: must stay None
    assert average_gradients(fabric, [p, q], 3.25) == 3.25
    assert p.grad.tolist() == [0.5, -0.5] and q.grad is None
    broadcast_tensors(fabric, [p])
    assert p.tolist() == [1.0, 2.0]
    check_same_across_ranks(fabric, [p], "p")  # no error


class _Rank:
    """The two attributes of Fabric that infinite_batches reads, for rank ``r`` of 2."""

    def __init__(self, r: int):
        self.global_rank, self.world_size = r, 2

    def setup_dataloaders(self, loader, use_distributed_sampler=True):
        return loader


def test_each_rank_draws_its_own_batches_and_rank_zero_the_one_process_ones():
    from fusion_bench.method.test_time import infinite_batches

    data = torch.utils.data.TensorDataset(torch.arange(50.0), torch.zeros(50))

    def first(fabric, seed=3):
        return next(infinite_batches(data, 10, seed=seed, fabric=fabric))[0]

    assert torch.equal(first(_Rank(0)), first(None))  # rank 0 = one process
    assert not torch.equal(first(_Rank(1)), first(_Rank(0)))
    assert torch.equal(first(_Rank(1)), first(None, seed=4))  # seed + rank
