"""RegMean: merge linear layers by solving the regression onto every expert's outputs.

Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models" (arXiv
2212.09849). For one linear layer ``y = W x`` with weights ``W_i`` in expert ``i`` and inputs
``X_i`` (rows = the layer's inputs on task ``i``'s data), the merged weight minimises
``sum_i || X_i W^T - X_i W_i^T ||^2``, whose closed form is::

    W^T = (sum_i G_i)^{-1} sum_i G_i W_i^T,        G_i = X_i^T X_i

Off-diagonal entries of each Gram matrix are scaled by ``alpha`` first (the paper's
regularisation towards the simple average; ``alpha = 0`` gives a diagonal-weighted mean)::

    G_i <- alpha G_i + (1 - alpha) diag(G_i)

Everything here is a pure function on tensors. RegMean++ (arXiv 2508.03121) uses the same
closed form; only the inputs ``X_i`` differ (see :mod:`fusion_bench.method.regmean_plusplus`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.task_arithmetic import compute_dtype

SOLVE_DTYPE = torch.float64
"""Dtype of the linear solve: Gram matrices of wide layers are ill-conditioned in float32."""


def reduce_non_diagonal(gram: torch.Tensor, ratio: float) -> torch.Tensor:
    """``ratio * G + (1 - ratio) * diag(G)``: off-diagonal entries scaled by ``ratio``.

    Args:
        gram: a square ``[d, d]`` Gram matrix.
        ratio: ``alpha`` in [0, 1]; 1 keeps ``G`` unchanged, 0 keeps only its diagonal.

    Raises:
        FusionBenchError: if ``ratio`` is outside [0, 1] or ``gram`` is not square.
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise FusionBenchError(f"reduce_non_diagonal_ratio must be in [0, 1], got {ratio}")
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise FusionBenchError(f"a Gram matrix must be square, got shape {tuple(gram.shape)}")
    if ratio == 1.0:
        return gram
    return ratio * gram + (1.0 - ratio) * torch.diag_embed(torch.diagonal(gram))


def regmean_terms(
    weight: torch.Tensor, gram: torch.Tensor, reduce_non_diagonal_ratio: float, name: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """One expert's terms of the closed form: ``(G_i', G_i' W_i^T)`` with ``G_i'`` reduced.

    Summing these over experts (streaming) and passing the sums to :func:`regmean_solve` is
    :func:`regmean_merge`.

    Args:
        weight: ``W_i``, ``[out, in]``.
        gram: ``G_i``, ``[in, in]``.
        reduce_non_diagonal_ratio: ``alpha`` (see :func:`reduce_non_diagonal`).
        name: the layer, for messages.

    Returns:
        ``(G_i', G_i' W_i^T)`` in at least float32, shapes ``[in, in]`` and ``[in, out]``.
    """
    if weight.dim() != 2 or tuple(gram.shape) != (weight.shape[1], weight.shape[1]):
        raise FusionBenchError(
            f"{name or 'linear layer'}: weight {tuple(weight.shape)} and Gram matrix "
            f"{tuple(gram.shape)} do not match"
        )
    # float32 at least: the terms are summed over experts, the solve itself is in float64
    g = reduce_non_diagonal(gram.to(compute_dtype(gram.dtype)), reduce_non_diagonal_ratio)
    return g, g @ weight.to(device=g.device, dtype=g.dtype).T


def regmean_solve(
    gram_sum: torch.Tensor, gram_weight_sum: torch.Tensor, name: str = "linear layer"
) -> torch.Tensor:
    """The merged weight ``W`` (``[out, in]``) from ``sum_i G_i`` and ``sum_i G_i W_i^T``.

    Solves ``(sum_i G_i) W^T = sum_i G_i W_i^T`` with ``torch.linalg.solve`` (never an
    explicit inverse) in float64. If the summed Gram matrix is singular (e.g. an input feature
    that is zero on every task), falls back to the minimum-norm least-squares solution
    ``pinv(sum_i G_i) sum_i G_i W_i^T`` with a warning.

    Args:
        gram_sum: ``[in, in]``, the (reduced) Gram matrices summed over experts.
        gram_weight_sum: ``[in, out]``, ``sum_i G_i W_i^T``.
        name: the layer, for the warning.

    Returns:
        ``W`` of shape ``[out, in]`` in float64 (the caller casts to the model's dtype).
    """
    if gram_sum.shape[0] != gram_weight_sum.shape[0]:
        raise FusionBenchError(
            f"{name}: Gram matrix {tuple(gram_sum.shape)} does not match the weighted sum "
            f"{tuple(gram_weight_sum.shape)}"
        )
    g = gram_sum.to(SOLVE_DTYPE)
    gw = gram_weight_sum.to(SOLVE_DTYPE)
    solution, info = torch.linalg.solve_ex(g, gw)
    if int(info) != 0 or not bool(torch.isfinite(solution).all()):
        warnings.warn(
            f"RegMean: the summed Gram matrix of {name} is singular; using the least-squares "
            "(pseudo-inverse) solution instead",
            RuntimeWarning,
            stacklevel=2,
        )
        solution = torch.linalg.pinv(g, hermitian=True) @ gw
    return solution.T


def regmean_merge(
    weights: Sequence[torch.Tensor],
    grams: Sequence[torch.Tensor],
    reduce_non_diagonal_ratio: float = 1.0,
    name: str = "linear layer",
) -> torch.Tensor:
    """RegMean merge of one linear layer: ``(sum_i G_i)^{-1} sum_i G_i W_i^T``, transposed.

    Args:
        weights: ``W_i`` of shape ``[out, in]``, one per expert.
        grams: ``G_i = X_i^T X_i`` of shape ``[in, in]``, one per expert (any common positive
            scaling, e.g. a mean over rows, cancels).
        reduce_non_diagonal_ratio: ``alpha`` (see :func:`reduce_non_diagonal`).
        name: the layer, for messages.

    Returns:
        The merged weight ``[out, in]`` in the dtype of ``weights[0]``.
    """
    if len(weights) != len(grams) or not weights:
        raise FusionBenchError(
            f"{name}: need one Gram matrix per weight, got {len(weights)} weights and "
            f"{len(grams)} Gram matrices"
        )
    gram_sum: torch.Tensor | None = None
    gram_weight_sum: torch.Tensor | None = None
    for w, gram in zip(weights, grams, strict=True):
        g, gw = regmean_terms(w, gram, reduce_non_diagonal_ratio, name)
        gram_sum = g if gram_sum is None else gram_sum + g
        gram_weight_sum = gw if gram_weight_sum is None else gram_weight_sum + gw
    return regmean_solve(gram_sum, gram_weight_sum, name).to(weights[0].dtype)
