"""Twin-Merging maths: exclusive knowledge compressed by truncated SVD, routed low-rank corrections.

Lu et al., "Twin-Merging: Dynamic Integration of Modular Expertise in Model Merging",
arXiv 2406.15479. With a shared model ``theta*`` (a merge of the experts) and experts
``theta_t``:

- **Exclusive knowledge** of task ``t``: ``v_t = theta_t - theta*``, compressed per weight
  matrix by a rank-``r`` truncated SVD: ``dW_t ~ U_t[:, :r] S_t[:r] V_t[:, :r]^T``. 1-D tensors
  (biases) are kept dense, as the reference implementation's ``sparsify.svd`` does.
- **Dynamic merge** for an input ``x`` with routing weights ``w(x)`` (a softmax over tasks):
  ``theta(x) = theta* + sum_t w_t(x) v_t``. For a linear layer this per-sample weight merge is
  exactly ``y = W* x + b* + sum_t w_t(x) (U_t S_t V_t^T x + db_t)`` -- two thin matmuls per
  layer instead of materialising a weight matrix per sample. The same holds for any module
  linear in its weight: a convolution (kernel flattened to ``[out, in * kernel]``, so
  ``V_t^T`` becomes a ``k``-channel convolution and ``U_t`` a 1x1 one) and an embedding table
  (row ``i`` of ``U_t S_t V_t^T`` is ``U_t[i] S_t V_t^T``).

The truncated SVD itself is :mod:`fusion_bench.merging.svd`'s (shared with SMILE). Pure
functions on tensors: no modules, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.svd import svd, truncate


class ExclusiveFactors(NamedTuple):
    """Rank-``k`` exclusive knowledge of one task for one linear layer.

    Attributes:
        u: ``U_t[:, :k]``, shape ``[m, k]``.
        svh: ``S_t[:k] V_t[:, :k]^T``, shape ``[k, n]`` (singular values folded in).
        bias_delta: ``b_t - b*`` (dense, shape ``[m]``), or ``None`` for a layer without bias.
        energy: fraction ``sum_{i<k} s_i^2 / sum_i s_i^2`` of ``||dW_t||_F^2`` kept (1 for a
            zero delta).
    """

    u: torch.Tensor
    svh: torch.Tensor
    bias_delta: torch.Tensor | None
    energy: float


def retained_energy(s: torch.Tensor, k: int) -> float:
    """``sum_{i<k} s_i^2 / sum_i s_i^2`` (1.0 when every ``s_i`` is 0)."""
    total = float((s.double() ** 2).sum())
    return 1.0 if total == 0.0 else float((s[:k].double() ** 2).sum()) / total


def truncation_error(s: torch.Tensor, k: int) -> float:
    """Frobenius error of the best rank-``k`` approximation: ``sqrt(sum_{i>=k} s_i^2)``
    (Eckart-Young), for singular values ``s`` in descending order."""
    return float((s[k:].double() ** 2).sum().sqrt())


def exclusive_factors(
    w_expert: torch.Tensor,
    w_shared: torch.Tensor,
    rank: int,
    b_expert: torch.Tensor | None = None,
    b_shared: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> ExclusiveFactors:
    """Compress ``dW = w_expert - w_shared`` to rank ``rank`` and keep ``b_expert - b_shared``.

    Args:
        w_expert: the expert's weight ``[m, n]``; a convolution kernel ``[m, in, *kernel]`` is
            flattened to ``[m, in * prod(kernel)]`` (``svh`` is returned flattened too).
        w_shared: the shared (merged) weight, same shape.
        rank: ``k``; ``-1`` or ``k >= min(m, n)`` keep the full delta (exactly, up to float
            error).
        b_expert: the expert's bias ``[m]`` or ``None``.
        b_shared: the shared bias ``[m]`` or ``None`` (given iff ``b_expert`` is).
        device: where to compute the SVD (see :func:`fusion_bench.merging.svd.svd`).

    Returns:
        Factors in ``w_shared``'s dtype, on ``w_shared``'s device.
    """
    if w_expert.shape != w_shared.shape:
        raise FusionBenchError(
            f"weight shapes differ: expert {tuple(w_expert.shape)}, shared {tuple(w_shared.shape)}"
        )
    if (b_expert is None) != (b_shared is None):
        raise FusionBenchError("the expert and shared layers disagree on having a bias")
    if w_shared.dim() < 2:
        raise FusionBenchError(f"a weight matrix needs 2+ dims, got {tuple(w_shared.shape)}")
    dtype = torch.promote_types(w_shared.dtype, torch.float32)
    full = svd((w_expert.to(dtype) - w_shared.to(dtype)).flatten(1), device)
    kept = truncate(full, rank)
    bias_delta = None
    if b_shared is not None:
        bias_delta = (b_expert.to(dtype) - b_shared.to(dtype)).to(w_shared.dtype)
    return ExclusiveFactors(
        u=kept.u.to(w_shared.dtype).contiguous(),
        svh=(kept.s[:, None] * kept.v.mT).to(w_shared.dtype).contiguous(),
        bias_delta=bias_delta,
        energy=retained_energy(full.s, kept.s.numel()),
    )


def stack_factors(
    factors: Sequence[ExclusiveFactors],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate the tasks' factors so that the routed correction is two matmuls.

    Returns:
        ``u_cat [m, T k]`` (``U_1 .. U_T`` side by side), ``svh_cat [T k, n]`` (``S_t V_t^T``
        stacked), ``bias_delta [T, m]`` or ``None``.
    """
    if not factors:
        raise FusionBenchError("no exclusive factors: the model pool has no experts")
    ranks = {f.u.shape[1] for f in factors}
    if len(ranks) != 1:
        raise FusionBenchError(f"all tasks of a layer must share one rank, got {sorted(ranks)}")
    has_bias = {f.bias_delta is not None for f in factors}
    if len(has_bias) != 1:
        raise FusionBenchError("the tasks of a layer disagree on having a bias")
    bias = None
    if factors[0].bias_delta is not None:
        bias = torch.stack([f.bias_delta for f in factors])
    return (
        torch.cat([f.u for f in factors], dim=1),
        torch.cat([f.svh for f in factors], dim=0),
        bias,
    )


def task_weights(
    weights: torch.Tensor, x: torch.Tensor, k: int, ndim: int, channel_dim: int = -1
) -> torch.Tensor:
    """Per-sample routing weights ``[B, T]``, each repeated ``k`` times (one per rank-1
    component of that task) and shaped to broadcast against a ``ndim``-dim tensor whose axis
    ``channel_dim`` holds the ``T k`` components and whose axis 0 is the batch.

    Raises:
        FusionBenchError: if ``weights`` is not 2-D, or ``x``'s first dimension is neither the
            batch nor 1 (an input shared by the batch, e.g. position ids, broadcasts).
    """
    if weights.dim() != 2:
        raise FusionBenchError(
            f"routing weights must be [batch, tasks], got {tuple(weights.shape)}"
        )
    if x.dim() < 1 or x.shape[0] not in (weights.shape[0], 1):
        raise FusionBenchError(
            f"routing weights are for {weights.shape[0]} samples but the layer input has shape "
            f"{tuple(x.shape)} (the batch must be the first dimension)"
        )
    shape = [weights.shape[0]] + [1] * (ndim - 1)
    shape[channel_dim] = weights.shape[1] * k
    return weights.repeat_interleave(k, dim=-1).reshape(shape)


def _rank(weights: torch.Tensor, u_cat: torch.Tensor, svh_cat: torch.Tensor) -> int:
    num_tasks = weights.shape[-1]
    k = svh_cat.shape[0] // num_tasks
    if k * num_tasks != svh_cat.shape[0] or u_cat.shape[1] != svh_cat.shape[0]:
        raise FusionBenchError(
            f"factors u {tuple(u_cat.shape)}, svh {tuple(svh_cat.shape)} do not hold "
            f"{num_tasks} tasks of one rank"
        )
    return k


def _bias(weights: torch.Tensor, bias_delta: torch.Tensor, ndim: int, channel_dim: int):
    """``sum_t w_t db_t`` ``[B, m]`` shaped like the output (``m`` on ``channel_dim``)."""
    b = weights @ bias_delta  # [B, m]
    shape = [b.shape[0]] + [1] * (ndim - 1)
    shape[channel_dim] = b.shape[1]
    return b.reshape(shape)


def low_rank_correction(
    x: torch.Tensor,
    weights: torch.Tensor,
    u_cat: torch.Tensor,
    svh_cat: torch.Tensor,
    bias_delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linear layer: ``sum_t w_t (U_t S_t V_t^T x + db_t)`` for per-sample weights.

    Args:
        x: layer input ``[B, ..., n]`` (or ``[1, ..., n]``, broadcast over the batch).
        weights: routing weights ``[B, T]`` (any reals; a softmax in Twin-Merging).
        u_cat: ``[m, T k]`` from :func:`stack_factors`.
        svh_cat: ``[T k, n]``.
        bias_delta: ``[T, m]`` or ``None``.

    Returns:
        ``[B, ..., m]``.
    """
    weights = weights.to(x.dtype)
    k = _rank(weights, u_cat, svh_cat)
    # z = S_t V_t^T x per task, scaled by that task's weight, then mapped back with U: the
    # weighting commutes with U, so one matmul over all tasks' columns sums the corrections.
    z = torch.nn.functional.linear(x, svh_cat)
    out = torch.nn.functional.linear(z * task_weights(weights, x, k, z.dim()), u_cat)
    if bias_delta is not None:
        out = out + _bias(weights, bias_delta.to(x.dtype), out.dim(), -1)
    return out


def conv_correction(
    x: torch.Tensor,
    weights: torch.Tensor,
    u_cat: torch.Tensor,
    svh_kernel: torch.Tensor,
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    bias_delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolution: ``sum_t w_t (U_t (S_t V_t^T * x) + db_t)`` for per-sample weights.

    Args:
        x: input ``[B, C_in, *spatial]``.
        weights: ``[B, T]``.
        u_cat: ``[m, T k]`` (a 1x1 convolution from the ``T k`` components to ``m`` channels).
        svh_kernel: ``[T k, C_in, *kernel]``: ``S_t V_t^T`` as a ``T k``-channel kernel.
        conv: ``conv(x, kernel)`` with the layer's stride / padding / dilation.
        bias_delta: ``[T, m]`` or ``None``.

    Returns:
        ``[B, m, *spatial_out]``.
    """
    weights = weights.to(x.dtype)
    k = _rank(weights, u_cat, svh_kernel)
    z = conv(x, svh_kernel)  # [B, T k, *spatial_out]
    z = z * task_weights(weights, x, k, z.dim(), channel_dim=1)
    out = torch.nn.functional.linear(z.movedim(1, -1), u_cat).movedim(-1, 1)
    if bias_delta is not None:
        out = out + _bias(weights, bias_delta.to(x.dtype), out.dim(), 1)
    return out


def embedding_correction(
    ids: torch.Tensor, weights: torch.Tensor, u_cat: torch.Tensor, svh_cat: torch.Tensor
) -> torch.Tensor:
    """Embedding table: row ``i`` of ``sum_t w_t U_t S_t V_t^T`` for every id.

    Args:
        ids: indices ``[B, ...]`` (or ``[1, ...]``, e.g. position ids shared by the batch).
        weights: ``[B, T]``.
        u_cat: ``[num_embeddings, T k]``.
        svh_cat: ``[T k, dim]``.

    Returns:
        ``[B, ..., dim]``.
    """
    weights = weights.to(svh_cat.dtype)
    k = _rank(weights, u_cat, svh_cat)
    z = torch.nn.functional.embedding(ids, u_cat)  # [B, ..., T k]
    return (z * task_weights(weights, ids, k, z.dim())) @ svh_cat


def merged_weight(
    w_shared: torch.Tensor, weights: torch.Tensor, u_cat: torch.Tensor, svh_cat: torch.Tensor
) -> torch.Tensor:
    """Dense per-sample weights ``W* + sum_t w_t U_t S_t V_t^T``, shape ``[B, m, n]``.

    The explicit form of the paper's ``theta(x)`` for one layer: a reference for tests and
    for exporting the model of a fixed routing; the forward uses :func:`low_rank_correction`.
    """
    num_tasks = weights.shape[-1]
    k = svh_cat.shape[0] // num_tasks
    u = u_cat.unflatten(1, (num_tasks, k))  # [m, T, k]
    svh = svh_cat.unflatten(0, (num_tasks, k))  # [T, k, n]
    deltas = torch.einsum("mtk,tkn->tmn", u, svh)
    return w_shared + torch.einsum("bt,tmn->bmn", weights.to(deltas.dtype), deltas)
