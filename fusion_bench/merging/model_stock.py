"""Model Stock: per-layer interpolation between the experts' average and the pretrained weights.

Jang et al., "Model Stock: All we need is just a few fine-tuned models", arXiv 2403.19522.
For each layer (state-dict key) with pretrained weights ``w_0`` and ``N`` fine-tuned weights
``w_i``:

    cos(theta) = mean over pairs i < j of cos(w_i - w_0, w_j - w_0)
    t          = N cos(theta) / (1 + (N - 1) cos(theta))
    w_H        = t * w_avg + (1 - t) * w_0 = w_0 + t * mean_i(w_i - w_0)

The mean pairwise cosine is computed in one streaming pass: with unit task vectors
``u_i = tau_i / |tau_i|``, ``sum_{i != j} <u_i, u_j> = |sum_i u_i|^2 - sum_i |u_i|^2``, so only
``sum_i tau_i`` and ``sum_i u_i`` are accumulated, never all N experts at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import StateDict
from fusion_bench.merging.task_arithmetic import task_vector

EPS = 1e-8
"""Task vectors with a smaller norm count as zero (cosine 0 with everything)."""


def model_stock_ratio(cos: torch.Tensor | float, n: int) -> torch.Tensor:
    """``t = n cos / (1 + (n - 1) cos)``, with ``cos`` clamped to [0, 1].

    The paper's geometry assumes the experts' task vectors are positively correlated
    (``cos > 0``). A negative mean cosine would give ``t < 0``, extrapolating *away* from the
    experts, so it is clamped: such a layer keeps its pretrained weights (``t = 0``).

    Args:
        cos: mean pairwise cosine between the task vectors of one layer (tensor or float).
        n: number of fine-tuned models (>= 2).
    """
    if n < 2:
        raise FusionBenchError(f"model stock needs at least 2 fine-tuned models, got {n}")
    c = torch.as_tensor(cos, dtype=torch.float64).clamp(0.0, 1.0)
    return n * c / (1.0 + (n - 1) * c)


def mean_pairwise_cosine(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of ``cos(v_i, v_j)`` over all pairs ``i < j`` (direct O(N^2) reference).

    A vector of norm below :data:`EPS` has cosine 0 with every other vector.
    """
    n = len(vectors)
    if n < 2:
        raise FusionBenchError(f"a mean pairwise cosine needs at least 2 vectors, got {n}")
    flat = [v.reshape(-1).double() for v in vectors]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            ni, nj = flat[i].norm(), flat[j].norm()
            if ni > EPS and nj > EPS:
                total += flat[i] @ flat[j] / (ni * nj)
    return total / (n * (n - 1) / 2)


def model_stock_merge(
    base: StateDict,
    experts: Iterable[tuple[str, StateDict]],
    base_name: str = PRETRAINED,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Merge experts into ``base`` with Model Stock, streaming over ``experts``.

    Args:
        base: pretrained state dict ``w_0``.
        experts: ``(name, state_dict)`` pairs, consumed one at a time; each is checked against
            ``base`` (keys, shapes, dtypes, finite values).
        base_name: name of the base model, for error messages.

    Returns:
        ``(state_dict, ratios)``: the merged full state dict (integer buffers from ``base``) and
        the interpolation ratio ``t`` of every floating-point key.

    Raises:
        FusionBenchError: with fewer than 2 experts, or an incompatible expert.
    """
    tau_sum: dict[str, torch.Tensor] = {}
    unit_sum: dict[str, torch.Tensor] = {}
    nonzero = dict.fromkeys(base, 0)
    n = 0
    for name, sd in experts:
        tv = task_vector(sd, base, name, base_name)
        del sd
        for k, t in tv.items():
            norm = t.double().norm()
            u = t / norm if norm > EPS else torch.zeros_like(t)
            nonzero[k] += int(norm > EPS)
            if n == 0:
                tau_sum[k], unit_sum[k] = t, u
            else:
                tau_sum[k].add_(t)
                unit_sum[k].add_(u)
        n += 1
    if n < 2:
        raise FusionBenchError(f"model stock needs at least 2 fine-tuned models, got {n}")
    out: dict[str, torch.Tensor] = {}
    ratios: dict[str, float] = {}
    for k, w0 in base.items():
        if k not in tau_sum:
            out[k] = w0  # integer buffer: copied
            continue
        u = unit_sum.pop(k)
        # sum_{i != j} <u_i, u_j> = |sum u|^2 - sum |u_i|^2, with |u_i|^2 = 1 for non-zero tau_i.
        cos = (u.double().pow(2).sum() - nonzero[k]) / (n * (n - 1))
        t = float(model_stock_ratio(cos, n))
        ratios[k] = t
        avg_tau = tau_sum.pop(k).div_(n)
        out[k] = (w0.to(avg_tau.dtype) + t * avg_tau).to(w0.dtype)
    return out, ratios
