"""Concrete task arithmetic: task arithmetic inside a learned Concrete subspace."""

from __future__ import annotations

from fusion_bench.method.concrete_merging import ConcreteMerging


class ConcreteTaskArithmetic(ConcreteMerging):
    """Concrete subspace learning with task arithmetic as the lower level.

    Tang et al., "Concrete Subspace Learning based Interference Elimination for Multi-task Model
    Fusion", arXiv 2312.06173: ``theta = theta_0 + lambda sum_i (m * tau_i)`` with a shared mask
    ``m`` learned by minimising the merged model's prediction entropy on unlabelled test batches
    (``lambda`` fixed). See :class:`~fusion_bench.method.concrete_merging.ConcreteMerging`.

    Args:
        scaling_factor: task arithmetic's lambda.
        temperature: Concrete temperature ``T``.
        initial_logits: initial mask logits (0: keep probability 1/2).
        lr: Adam learning rate of the mask logits.
        max_steps: mask-learning steps (one test batch per task per step).
        batch_size: test images per task per step.
        rescale: rescale each tensor's mask to mean one.
        eval_mask: final mask: ``sample`` | ``discrete`` | ``hard`` | ``expected``.
        seed: seed of the data order and of the mask noise.
        weights_path: a ``method_artifacts.safetensors`` of a previous run: load its mask logits
            and skip training.
    """

    def __init__(
        self,
        scaling_factor: float = 0.3,
        temperature: float = 0.5,
        initial_logits: float = 0.0,
        lr: float = 1e-3,
        max_steps: int = 2000,
        batch_size: int = 16,
        rescale: bool = True,
        eval_mask: str = "sample",
        seed: int = 0,
        weights_path: str | None = None,
    ) -> None:
        super().__init__(
            merge="task_arithmetic",
            scaling_factor=scaling_factor,
            temperature=temperature,
            initial_logits=initial_logits,
            lr=lr,
            max_steps=max_steps,
            batch_size=batch_size,
            rescale=rescale,
            eval_mask=eval_mask,
            seed=seed,
            weights_path=weights_path,
        )
