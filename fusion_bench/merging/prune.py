"""Magnitude pruning of task vectors: keep the top-k entries of a tensor by absolute value.

Used by sparse WEMoE (Tang et al., "Merging Multi-Task Models via Weight-Ensembling Mixture of
Experts", arXiv 2402.00433; and its extension, Shen et al., "Efficient and Effective
Weight-Ensembling Mixture of Experts for Multi-Task Model Merging", arXiv 2410.21804), which
prunes each MLP task vector ``tau`` tensor by tensor to its largest ``(1 - p)`` fraction:
``tau' = m * tau`` with ``m_j = 1`` iff ``|tau_j|`` is among the ``k = round((1 - p) n)`` largest.

The threshold is one :func:`torch.kthvalue` selection (O(n), no sort). Entries tied with the
threshold are kept in index order until exactly ``k`` entries are kept, so the number of kept
entries never depends on ties.
"""

from __future__ import annotations

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.ties import kth_largest


def check_prune_ratio(p: float) -> None:
    """Raise unless ``0 <= p <= 1``."""
    if not 0.0 <= p <= 1.0:
        raise FusionBenchError(f"prune ratio must be in [0, 1], got {p}")


def num_kept_entries(numel: int, prune_ratio: float) -> int:
    """``round((1 - prune_ratio) * numel)``, halves rounded up: entries kept after pruning.

    Unlike TIES' trim, no minimum of one entry: ``prune_ratio = 1`` prunes everything.
    """
    check_prune_ratio(prune_ratio)
    return min(numel, int((1.0 - prune_ratio) * numel + 0.5))


def topk_magnitude_mask(t: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of ``t``) of exactly ``k`` entries of largest ``|t|``.

    Entries strictly above the ``k``-th largest magnitude are all kept; entries equal to it fill
    the remaining slots in flattened index order.

    Raises:
        FusionBenchError: if ``k`` is not in ``[0, t.numel()]``.
    """
    n = t.numel()
    if not 0 <= k <= n:
        raise FusionBenchError(f"cannot keep {k} entries of a tensor of {n}")
    if k == n:
        return torch.ones_like(t, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(t, dtype=torch.bool)
    mags = t.detach().reshape(-1).abs()
    threshold = kth_largest(mags, k)
    above = mags > threshold
    ties = mags == threshold
    # ``above`` holds fewer than k entries by definition of the k-th largest; the ties fill up.
    missing = k - int(above.sum())
    keep = above | (ties & (torch.cumsum(ties, dim=0) <= missing))
    return keep.reshape(t.shape)


def magnitude_prune(t: torch.Tensor, prune_ratio: float) -> torch.Tensor:
    """Zero all but the top ``(1 - prune_ratio)`` fraction of ``t``'s entries by magnitude.

    Args:
        t: a tensor (e.g. one parameter's task vector).
        prune_ratio: fraction in [0, 1] of entries zeroed (0.9 keeps the largest 10%).

    Returns:
        A new tensor (``t`` itself is not modified).
    """
    k = num_kept_entries(t.numel(), prune_ratio)
    if k == t.numel():
        return t.clone()
    return torch.where(
        topk_magnitude_mask(t, k), t, torch.zeros((), dtype=t.dtype, device=t.device)
    )
