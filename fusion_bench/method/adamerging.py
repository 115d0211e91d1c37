"""AdaMerging: task-wise or layer-wise merging coefficients learned by test-time entropy minimisation."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.task_arithmetic import task_vector
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.merged import (
    MODES,
    TaskVectorMergedModel,
    coefficient_shape,
    tied_aliases,
    untied_state_dict,
)

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool

COEFFICIENTS = "coefficients"
"""Artifact key of the learned (effective) merging coefficients."""


def stack_task_vectors(
    pool: BaseModelPool, base: Mapping[str, torch.Tensor], aliases: Set[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """``key -> [N, *shape]``: the experts' task vectors stacked along a new task axis.

    Experts are streamed (one state dict in memory at a time besides the stack); keys, shapes
    and dtypes are checked against ``base`` (a mismatch is a :class:`FusionBenchError`).
    ``aliases``: names of tied tensors left out of ``base`` (see
    :func:`~fusion_bench.models.merged.untied_state_dict`), dropped from each expert too.
    """
    n = len(pool)
    if n == 0:
        raise FusionBenchError("this method needs at least one expert in the pool")
    stacked: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i, (name, sd) in enumerate(iter_state_dicts(pool, desc="task vectors")):
            tv = task_vector({k: v for k, v in sd.items() if k not in aliases}, base, name)
            del sd
            for k, t in tv.items():
                if k not in stacked:
                    stacked[k] = torch.empty((n, *t.shape), dtype=t.dtype, device=t.device)
                stacked[k][i] = t
    return stacked


def load_artifacts(path: str, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``method_artifacts.safetensors`` file (one-line errors)."""
    from pathlib import Path

    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FusionBenchError(
            f"{what}: '{path}' is not a file (give a method_artifacts.safetensors)"
        )
    try:
        return load_file(path)
    except Exception as e:  # a corrupt or non-safetensors file
        raise FusionBenchError(f"{what}: cannot read '{path}' as safetensors ({e})") from None


def loaded_tensor(
    tensors: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...], path: str
) -> torch.Tensor:
    """``tensors[key]``, checked to have ``shape``."""
    if key not in tensors:
        raise FusionBenchError(f"weights_path '{path}' has no tensor '{key}'")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise FusionBenchError(
            f"weights_path '{path}': '{key}' has shape {tuple(t.shape)} but this pool and mode "
            f"need {tuple(shape)}"
        )
    return t


def loss_summary(history: list[float]) -> dict[str, Any]:
    """First and last summed entropies of a test-time training run."""
    return {
        "steps": len(history),
        "loss_first": history[0] if history else None,
        "loss_last": history[-1] if history else None,
    }


class AdaMerging(BaseMethod):
    """AdaMerging: learn task arithmetic's coefficients by minimising prediction entropy.

    Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", arXiv 2310.02575::

        task-wise:   theta   = theta_0   + sum_i lambda_i   tau_i
        layer-wise:  theta^l = theta_0^l + sum_i lambda_i^l tau_i^l
        lambda* = argmin_lambda  sum_t  mean_{x in B_t} H(softmax(f_t(x; theta(lambda))))

    with ``tau_i = theta_i - theta_0`` and ``B_t`` unlabelled test batches of task ``t`` (labels
    are never read). A "layer" is every floating-point state-dict entry (each parameter tensor),
    as in the paper's code, which gives one lambda per entry of ``model.state_dict()``.
    Coefficients start at ``init_value`` (so step 0 is task arithmetic with that lambda) and are
    trained with Adam through :func:`~fusion_bench.method.test_time.minimise_entropy`. The merged
    model is computed functionally (:class:`~fusion_bench.models.merged.TaskVectorMergedModel`),
    never copied; the result is the pretrained model holding the final merged weights.
    Defaults follow the FusionBench reference (one batch of 16 per task per step, 1000 steps);
    the paper's own script draws two batches of 16 per task per step for 500 steps.

    Args:
        mode: ``"layer_wise"`` (one lambda per task and parameter tensor) or ``"task_wise"``.
        init_value: initial lambda (the paper's prior 0.3).
        lr: Adam learning rate.
        max_steps: optimisation steps (one test batch per task per step).
        batch_size: test images per task per step.
        clamp_weights: merge with ``clamp(lambda, 0, 1)`` (the paper's code clamps in the forward
            pass; upstream FusionBench's CLIP configs do not).
        seed: data-order seed.
        weights_path: a ``method_artifacts.safetensors`` of a previous run: load its
            ``coefficients`` (shape-checked) and skip training.
    """

    def __init__(
        self,
        mode: str = "layer_wise",
        init_value: float = 0.3,
        lr: float = 1e-3,
        max_steps: int = 1000,
        batch_size: int = 16,
        clamp_weights: bool = True,
        seed: int = 0,
        weights_path: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise FusionBenchError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
        if max_steps < 0 or batch_size < 1:
            raise FusionBenchError("max_steps must be >= 0 and batch_size >= 1")
        self.mode = mode
        self.init_value = float(init_value)
        self.lr = float(lr)
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.clamp_weights = bool(clamp_weights)
        self.seed = int(seed)
        self.weights_path = None if weights_path is None else str(weights_path)
        self._coefficients: torch.Tensor | None = None
        self._tasks: list[str] = []
        self._history: list[float] = []

    def build(self, pool: BaseModelPool) -> TaskVectorMergedModel:
        """The functional merged model at ``init_value`` (or the loaded coefficients)."""
        model = pool.load_pretrained()
        tvs = stack_task_vectors(pool, untied_state_dict(model), tied_aliases(model))
        coefficients = None
        if self.weights_path is not None:
            shape = coefficient_shape(self.mode, len(pool), len(tvs))
            tensors = load_artifacts(self.weights_path, "weights_path")
            coefficients = loaded_tensor(tensors, COEFFICIENTS, shape, self.weights_path)
        return TaskVectorMergedModel(
            model,
            tvs,
            mode=self.mode,
            init_value=self.init_value,
            coefficients=coefficients,
            clamp_weights=self.clamp_weights,
        )

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Learn the coefficients on the pool's test batches; return the merged model."""
        from fusion_bench.method.test_time import minimise_entropy

        module = self.build(pool)
        self._tasks = list(pool.names)
        self._history = []
        if self.weights_path is None and self.max_steps > 0:
            fabric = self.get_fabric()
            optimizer = torch.optim.Adam([module.coefficients], lr=self.lr)
            self._history = minimise_entropy(
                fabric,
                module,
                optimizer,
                pool,
                self._tasks,
                max_steps=self.max_steps,
                batch_size=self.batch_size,
                seed=self.seed,
                desc=f"AdaMerging ({self.mode})",
            )
        # the effective lambdas in the trained shape ([N] task-wise): they load back unchanged
        coefficients = module.coefficients.detach()
        self._coefficients = (
            coefficients.clamp(0, 1) if self.clamp_weights else coefficients
        ).cpu()
        return module.merge()

    def artifacts(self) -> dict[str, torch.Tensor]:
        """``coefficients``: the effective lambdas (``[N]`` task-wise, ``[N, K]`` layer-wise)."""
        return {} if self._coefficients is None else {COEFFICIENTS: self._coefficients}

    def extra_report(self) -> dict[str, Any]:
        """Mode, coefficient count, per-task mean lambda and the first / last loss."""
        if self._coefficients is None:
            return {}
        c = self._coefficients
        means = (c if c.dim() == 1 else c.mean(dim=1)).tolist()
        return {
            "mode": self.mode,
            "num_coefficients": int(c.numel()),
            "trained": self.weights_path is None and self.max_steps > 0,
            "mean_lambda_per_task": dict(zip(self._tasks, means, strict=True)),
            **loss_summary(self._history),
        }
