"""Test-time adaptation shared by AdaMerging, Concrete and WEMoE: minimise prediction entropy.

Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning" (arXiv 2310.02575)
learn merging parameters by minimising the Shannon entropy of the merged model's predictions on
unlabelled test batches of every task: ``L = sum_t mean_{x in B_t} H(softmax(f_t(x)))``.
The test labels are never read.

Under Lightning Fabric DDP (several processes) every rank draws its own batches (data-order
seed + global rank) and the gradients of the trainable tensors are averaged across ranks before
each optimiser step (:func:`~fusion_bench.utils.distributed.average_gradients`), so a step sees
``world_size`` batches per task and every rank keeps identical merging parameters (checked at the
end). The result therefore differs from a one-process run (other batches), as with any
data-parallel training. The module is not wrapped in ``DistributedDataParallel``: the merged
weights are computed functionally, methods switch which tensors train (Concrete: mask vs
coefficients) and take several backward passes per step (one per task), which DDP's fixed
gradient buckets and per-backward reduction do not fit; one explicit all-reduce per step does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Shannon entropy ``-sum_c p_c log p_c`` of ``softmax(logits)``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


def infinite_batches(
    dataset, batch_size: int, seed: int, fabric: Fabric | None = None, num_workers: int = 0
) -> Iterator:
    """Shuffled batches of ``dataset`` forever (a new permutation per epoch), on fabric's device.

    The order is seeded by ``seed + global rank``: each process of a DDP run draws other batches
    (one process: ``seed`` itself).
    """
    from torch.utils.data import DataLoader

    from fusion_bench.utils.distributed import rank_and_world_size

    rank, _ = rank_and_world_size(fabric)
    generator = torch.Generator().manual_seed(seed + rank)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers
    )
    if fabric is not None:
        loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    while True:
        yield from loader


def optimised_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors ``optimizer`` updates, in its (rank-independent) order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def setup_trainable(
    fabric: Fabric, module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``module`` on fabric's device in its precision, ``optimizer`` set up by Fabric, and the
    optimised tensors equal to rank 0's on every rank.

    Unlike ``fabric.setup`` this never wraps the module in ``DistributedDataParallel`` (see the
    module docstring): :func:`entropy_step` averages the gradients itself.
    """
    from fusion_bench.utils.distributed import broadcast_tensors

    module = fabric.strategy.precision.convert_module(module).to(fabric.device)
    optimizer = fabric.setup_optimizers(optimizer)
    broadcast_tensors(fabric, optimised_tensors(optimizer))
    return module, optimizer


def entropy_step(
    fabric: Fabric,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    pool: BaseModelPool,
    tasks: Sequence[str],
    loaders: Mapping[str, Iterator],
) -> float:
    """One optimiser step on the summed entropies of one batch per task.

    Each task's loss is backpropagated at once, so only one task's graph is alive at a time;
    the gradients are then averaged over the ranks of a DDP run before the step.

    Returns:
        The summed entropy of the step (its mean over ranks).
    """
    from fusion_bench.utils.distributed import average_gradients

    precision = fabric.strategy.precision
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for t in tasks:
        x, _labels = next(loaders[t])  # labels are never used: test-time adaptation
        with fabric.autocast():
            logits = pool.task_logits(module, t, precision.convert_input(x))
        loss = entropy_loss(logits)
        fabric.backward(loss)
        total += loss.item()
    total = average_gradients(fabric, optimised_tensors(optimizer), total)
    optimizer.step()
    return total


def minimise_entropy(
    fabric: Fabric,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    pool: BaseModelPool,
    tasks: Sequence[str],
    *,
    max_steps: int,
    batch_size: int,
    seed: int = 0,
    split: str = "test",
    desc: str = "test-time adaptation",
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Run ``max_steps`` Adam-style steps of summed per-task entropy minimisation.

    Each step (:func:`entropy_step`) draws one unlabelled batch per task from
    ``pool.task_dataset(task, split)`` and backpropagates each task's loss at once so only one
    task's graph is alive at a time (memory stays flat over tasks and steps). With several
    processes, each draws its own batches and the gradients are averaged; at the end the
    optimised tensors are checked to be identical on every rank.

    Args:
        fabric: device / precision / strategy.
        module: the trainable merged model; ``pool.task_logits(module, task, x)`` must work on it.
        optimizer: optimiser over the trainable parameters of ``module``.
        pool: gives the task data and task heads.
        tasks: tasks whose entropies are summed.
        max_steps: optimisation steps.
        batch_size: images per task per step (per process).
        seed: data-order seed.
        split: which split's inputs are used (labels ignored).
        desc: progress-bar label.
        after_step: called with the step index after each optimiser step (e.g. clamping).

    Returns:
        The summed loss of every step (with several processes: its mean over them).

    Raises:
        FusionBenchError: the ranks ended with different trained values.
    """
    from tqdm.auto import tqdm

    from fusion_bench.utils.distributed import check_same_across_ranks

    module, optimizer = setup_trainable(fabric, module, optimizer)
    loaders = {
        t: infinite_batches(pool.task_dataset(t, split), batch_size, seed + i, fabric)
        for i, t in enumerate(tasks)
    }
    history: list[float] = []
    bar = tqdm(range(max_steps), desc=desc, unit="step", disable=not fabric.is_global_zero)
    for step in bar:
        total = entropy_step(fabric, module, optimizer, pool, tasks, loaders)
        if after_step is not None:
            after_step(step)
        history.append(total)
        bar.set_postfix(loss=f"{total:.4f}")
    check_same_across_ranks(fabric, optimised_tensors(optimizer), f"{desc}: trained tensors")
    return history
