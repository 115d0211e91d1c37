"""Concrete AdaMerging: AdaMerging inside a learned Concrete subspace."""

from __future__ import annotations

from fusion_bench.method.concrete_merging import ConcreteMerging


class ConcreteAdaMerging(ConcreteMerging):
    """Concrete subspace learning with (layer-wise) AdaMerging as the lower level.

    Tang et al., "Concrete Subspace Learning based Interference Elimination for Multi-task Model
    Fusion", arXiv 2312.06173: ``theta^l = theta_0^l + sum_i lambda_i^l (m^l * tau_i^l)``; the
    shared mask ``m`` is meta-learned with one inner AdaMerging step per mask step, then AdaMerging
    (Yang et al., arXiv 2310.02575) runs with the mask fixed. See
    :class:`~fusion_bench.method.concrete_merging.ConcreteMerging`.

    Args:
        scaling_factor: initial lambda (inner steps and final AdaMerging start from it).
        temperature: Concrete temperature ``T``.
        initial_logits: initial mask logits (0: keep probability 1/2).
        lr: Adam learning rate of the mask logits.
        max_steps: mask-learning steps (each: one inner lambda step + one mask step).
        batch_size: test images per task per step.
        rescale: rescale each tensor's mask to mean one.
        eval_mask: final mask: ``sample`` | ``discrete`` | ``hard`` | ``expected``.
        seed: seed of the data order and of the mask noise.
        weights_path: a ``method_artifacts.safetensors`` of a previous run: load its mask logits
            and coefficients and skip training.
        mode: ``layer_wise`` (one lambda per task and parameter tensor) or ``task_wise``.
        inner_lr: Adam learning rate of the inner lambda step (the reference's ``base_lr``).
        adamerging_lr: Adam learning rate of the final AdaMerging.
        adamerging_steps: steps of the final AdaMerging with the mask fixed.
        clamp_weights: merge with ``clamp(lambda, 0, 1)``.
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
        mode: str = "layer_wise",
        inner_lr: float = 1.0,
        adamerging_lr: float = 1e-3,
        adamerging_steps: int = 1000,
        clamp_weights: bool = False,
    ) -> None:
        super().__init__(
            merge="adamerging",
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
            mode=mode,
            inner_lr=inner_lr,
            adamerging_lr=adamerging_lr,
            adamerging_steps=adamerging_steps,
            clamp_weights=clamp_weights,
        )
