"""The shared evaluation loop's sharding and reduction (DDP evaluation), in one process.

Ranks are simulated: each rank's shard is evaluated with :meth:`BaseTaskPool.evaluate_shard`
and the per-rank totals merged as the all-gather would, which must give the numbers of one
process. The real two-process run (gloo) is tests/integration/test_scale_out.py.
"""

import pytest
import torch
from text_helpers import byte_tokenizer, save_glue_datasets, tiny_t5
from torch import nn

from fusion_bench.taskpool.base import (
    accumulate,
    examples_to_evaluate,
    gather_totals,
    merge_totals,
    shard,
    to_host,
)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 12, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shards_partition_the_index_set_in_order(n, world_size):
    shards = [shard(n, r, world_size) for r in range(world_size)]
    assert [i for s in shards for i in s] == list(range(n))  # each index once, in order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_world_size_one_is_the_whole_range():
    assert shard(10, 0, 1) == range(10)
    assert shard(7, 1, 3) == range(3, 5) and shard(7, 0, 3) == range(0, 3)


@pytest.mark.parametrize("rank,world_size", [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_is_an_error(rank, world_size):
    with pytest.raises(ValueError):
        shard(4, rank, world_size)


def test_limit_counts_examples_of_one_process():
    assert examples_to_evaluate(100, None, 64) == 100
    assert examples_to_evaluate(100, 1, 64) == 64
    assert examples_to_evaluate(100, 2, 64) == 100


def test_merge_of_hand_made_rank_totals():
    rank0 = {"correct": 3, "loss_sum": 1.5, "count": 4, "texts": ["a", "b"]}
    rank1 = {"correct": 1, "loss_sum": 0.25, "count": 3, "texts": ["c"]}
    merged = merge_totals([rank0, rank1, {}])  # rank 2 had no example
    assert merged == {"correct": 4, "loss_sum": 1.75, "count": 7, "texts": ["a", "b", "c"]}
    assert rank0["texts"] == ["a", "b"]  # inputs untouched


def test_accumulate_sums_on_device_and_to_host_gives_numbers():
    totals: dict = {}
    accumulate(totals, {"correct": torch.tensor(2), "loss": torch.tensor(0.5).double(), "n": 2})
    accumulate(totals, {"correct": torch.tensor(1), "loss": torch.tensor(0.25).double(), "n": 1})
    assert isinstance(totals["correct"], torch.Tensor)
    host = to_host(totals)
    assert host == {"correct": 3, "loss": 0.75, "n": 3}
    assert isinstance(host["correct"], int)


def test_one_process_gather_is_the_identity():
    totals = {"count": 3, "texts": ["x"]}
    assert gather_totals(None, totals) == totals


def _simulated(pool, model, world_size):
    """Every task's metrics as ``world_size`` ranks would compute them after the all-gather."""
    pool.prepare()
    device = torch.device("cpu")
    out = {}
    for name in pool.task_names:
        plan = pool.task_evaluation(name, model, device)
        parts = [pool.evaluate_shard(name, plan, r, world_size) for r in range(world_size)]
        out[name] = plan.metrics(merge_totals(parts))
    return out


def _assert_same_metrics(a, b):
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys()
        for k, v in a[task].items():
            if k == "loss":  # float32 batch sums of other batch compositions
                assert v == pytest.approx(b[task][k], rel=1e-6)
            else:
                assert v == b[task][k], (task, k)


@pytest.mark.parametrize("limit_batches", [None, 2])
@pytest.mark.parametrize("world_size", [2, 3])
def test_clip_ranks_give_the_one_process_metrics(
    make_pool, vision_model, world_size, limit_batches
):
    pool = make_pool(batch_size=4, limit_batches=limit_batches)
    _assert_same_metrics(_simulated(pool, vision_model, world_size), pool.evaluate(vision_model))


def test_limit_selects_the_same_examples_for_every_world_size(make_pool, vision_model):
    seen: list[int] = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = vision_model

        def forward(self, pixel_values):
            seen.append(pixel_values.shape[0])
            return self.inner(pixel_values=pixel_values)

    pool = make_pool(batch_size=5, limit_batches=2)  # tasks of 12 and 8 images
    _simulated(pool, Counting(), 2)
    # task a: first 10 images -> ranks of 5 each; task b: all 8 -> ranks of 4 each
    assert seen == [5, 5, 4, 4]


def test_glue_predictions_are_gathered_in_example_order(tmp_path):
    from fusion_bench.taskpool.glue_text_generation import GLUETextGenerationTaskPool

    tok_dir = tmp_path / "tok"
    byte_tokenizer().save_pretrained(tok_dir)
    tasks = ("stsb", "mnli")
    data = save_glue_datasets(tmp_path / "data", tasks)
    cfg = {t: {"dataset": data[t], "subset": None, "metadata": {"version": 1}} for t in tasks}
    pool = GLUETextGenerationTaskPool(
        str(tok_dir), cfg, batch_size=1, max_new_tokens=3, cache_dir=str(tmp_path / "cache")
    )
    model = tiny_t5(len(pool.tokenizer()))
    _assert_same_metrics(_simulated(pool, model, 2), pool.evaluate(model))
