"""Test-time adaptation shared by AdaMerging, Concrete and WEMoE: minimise prediction entropy.

Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning" (arXiv 2310.02575)
learn merging parameters by minimising the Shannon entropy of the merged model's predictions on
unlabelled test batches of every task: ``L = sum_t mean_{x in B_t} H(softmax(f_t(x)))``.
The test labels are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
    """Shuffled batches of ``dataset`` forever (a new permutation per epoch), on fabric's device."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers
    )
    if fabric is not None:
        loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    while True:
        yield from loader


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

    Each step draws one unlabelled batch per task from ``pool.task_dataset(task, split)``, and
    backpropagates each task's loss at once so only one task's graph is alive at a time (memory
    stays flat over tasks and steps).

    Args:
        fabric: device / precision / strategy.
        module: the trainable merged model; ``pool.task_logits(module, task, x)`` must work on it.
        optimizer: optimiser over the trainable parameters of ``module``.
        pool: gives the task data and task heads.
        tasks: tasks whose entropies are summed.
        max_steps: optimisation steps.
        batch_size: images per task per step.
        seed: data-order seed.
        split: which split's inputs are used (labels ignored).
        desc: progress-bar label.
        after_step: called with the step index after each optimiser step (e.g. clamping).

    Returns:
        The summed loss of every step.
    """
    from tqdm.auto import tqdm

    module, optimizer = fabric.setup(module, optimizer)
    loaders = {
        t: infinite_batches(pool.task_dataset(t, split), batch_size, seed + i, fabric)
        for i, t in enumerate(tasks)
    }
    history: list[float] = []
    bar = tqdm(range(max_steps), desc=desc, unit="step", disable=not fabric.is_global_zero)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for t in tasks:
            x, _labels = next(loaders[t])  # labels are never used: test-time adaptation
            loss = entropy_loss(pool.task_logits(module, t, x))
            fabric.backward(loss)
            total += loss.item()
        optimizer.step()
        if after_step is not None:
            after_step(step)
        history.append(total)
        bar.set_postfix(loss=f"{total:.4f}")
    return history
