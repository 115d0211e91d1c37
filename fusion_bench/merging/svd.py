"""SVD maths of SMILE: truncated SVD of weight deltas, projection routers, top-k weighting.

Tang et al., "SMILE: Zero-Shot Sparse Mixture of Low-Rank Experts Construction From
Pre-Trained Foundation Models", arXiv 2408.10174. For a linear layer with pretrained weight
``W_0`` and fine-tuned weights ``W_i`` (``i = 1..E``):

- **Experts**: ``dW_i = W_i - W_0 = U_i S_i V_i^T`` (reduced SVD); expert ``i`` is the rank-``k``
  truncation ``U_i[:, :k] S_i[:k] V_i[:, :k]^T`` (``k = -1``: full rank, i.e. exactly ``dW_i``).
- **Router**: ``r_i(x) = || V_i[:, :gate_k]^T x ||_2``, the norm of the projection of ``x`` on
  the top-``gate_k`` right singular vectors of ``dW_i``: an input lying in the subspace that
  fine-tuning on task ``i`` changed most is routed to expert ``i``. Singular vectors of
  numerically zero singular values (``rank(dW_i) < gate_k``, e.g. LoRA deltas) are not part of
  that subspace and are dropped (see :func:`router_projection`).
- **Weights**: ``w(x) = softmax`` over the ``top_k`` largest logits, zero for the other experts.

Pure functions on tensors: no modules, no I/O. SVDs run in at least float32 (half precision
SVDs are unsupported on CPU and lose the small singular values that a truncation compares).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fusion_bench.errors import FusionBenchError

FULL_RANK = -1
"""``k`` value that keeps every singular value (the truncation is then exact)."""


class SVD(NamedTuple):
    """Reduced SVD ``w = u @ diag(s) @ v.T``: ``u [m, r]``, ``s [r]`` (descending), ``v [n, r]``.

    ``r = min(m, n)``. ``v`` holds the right singular vectors as columns, as in the paper.
    """

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor


def svd(w: torch.Tensor, device: torch.device | str | None = None) -> SVD:
    """Reduced SVD of a 2-D matrix, computed in at least float32.

    Args:
        w: matrix ``[m, n]``.
        device: where to compute (e.g. ``"cuda"`` for large matrices); the factors are returned
            on ``w``'s device. ``None`` computes where ``w`` is.

    Returns:
        :class:`SVD` factors in float32 (float64 if ``w`` is float64).
    """
    if w.dim() != 2:
        raise FusionBenchError(f"SVD needs a 2-D matrix, got shape {tuple(w.shape)}")
    dtype = torch.promote_types(w.dtype, torch.float32)
    x = w.to(device=device if device is not None else w.device, dtype=dtype)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return SVD(u.to(w.device), s.to(w.device), vh.mT.to(w.device))


def effective_rank(k: int, m: int, n: int) -> int:
    """Number of singular triplets a truncation to ``k`` keeps for an ``[m, n]`` matrix.

    ``k = -1`` (:data:`FULL_RANK`) or ``k >= min(m, n)`` keep all ``min(m, n)``.

    Raises:
        FusionBenchError: if ``k`` is 0 or below -1.
    """
    if k == FULL_RANK:
        return min(m, n)
    if k < 1:
        raise FusionBenchError(f"rank must be a positive integer or {FULL_RANK} (full), got {k}")
    return min(k, m, n)


def truncate(factors: SVD, k: int) -> SVD:
    """Keep the top-``k`` singular triplets (``k = -1``: all; ``k > rank`` is clipped)."""
    r = effective_rank(k, factors.u.shape[0], factors.v.shape[0])
    return SVD(factors.u[:, :r], factors.s[:r], factors.v[:, :r])


def reconstruct(factors: SVD) -> torch.Tensor:
    """``u @ diag(s) @ v.T``."""
    return (factors.u * factors.s) @ factors.v.mT


def router_projection(factors: SVD) -> torch.Tensor:
    """``V[:, :gate_k]^T`` with the rows of numerically zero singular values set to zero.

    When ``dW`` has rank ``r < gate_k`` (e.g. a rank-8 LoRA delta and ``gate_k = 16``), its
    singular vectors beyond ``r`` span no direction that fine-tuning changed: the SVD returns an
    arbitrary basis of the null space there, which would add input-dependent noise to the
    router. Zero rows leave the logit ``||V^T x||`` of the real subspace unchanged. The
    tolerance is :func:`torch.linalg.matrix_rank`'s default: ``s_max * max(m, n) * eps``.
    """
    v, s = factors.v, factors.s
    m, n = factors.u.shape[0], v.shape[0]
    tol = s.max(dim=-1, keepdim=True).values * max(m, n) * torch.finfo(s.dtype).eps
    return v.mT * (s > tol).to(v.dtype)[..., :, None]


class ExpertFactors(NamedTuple):
    """One SMILE expert of one linear layer (see :func:`smile_expert_factors`).

    Attributes:
        u: ``U_i[:, :k]``, shape ``[m, k]``.
        svh: ``S_i[:k] V_i[:, :k]^T``, shape ``[k, n]`` (singular values folded in, so the
            expert is ``u @ svh`` and costs two matmuls).
        gate: ``V_i[:, :gate_k]^T``, shape ``[gate_k, n]``, the router's projection.
        bias_delta: ``b_i - b_0`` (shape ``[m]``), or ``None`` for a layer without bias.
    """

    u: torch.Tensor
    svh: torch.Tensor
    gate: torch.Tensor
    bias_delta: torch.Tensor | None


def smile_expert_factors(
    w0: torch.Tensor,
    wi: torch.Tensor,
    k: int,
    gate_k: int,
    b0: torch.Tensor | None = None,
    bi: torch.Tensor | None = None,
    routing_use_diff: bool = True,
    device: torch.device | str | None = None,
) -> ExpertFactors:
    """Expert ``i`` of a SMILE linear layer from its pretrained and fine-tuned weights.

    ``dW_i = wi - w0 = U S V^T``; the expert is ``U[:, :k] S[:k] V[:, :k]^T`` and its router
    projection ``V[:, :gate_k]^T``. With ``routing_use_diff=False`` the router instead uses the
    right singular vectors of the fine-tuned weight ``wi`` itself (the reference
    implementation's ablation). Factors are returned in ``w0``'s dtype.

    Args:
        w0: pretrained weight ``[m, n]``.
        wi: fine-tuned weight ``[m, n]``.
        k: expert rank (``-1``: full rank).
        gate_k: router rank (``-1``: full rank).
        b0: pretrained bias ``[m]`` or ``None``.
        bi: fine-tuned bias ``[m]`` or ``None`` (must be given iff ``b0`` is).
        routing_use_diff: route on ``dW_i``'s singular vectors (the paper) or on ``wi``'s.
        device: where to compute the SVDs (see :func:`svd`).
    """
    if w0.shape != wi.shape:
        raise FusionBenchError(
            f"weight shapes differ: pretrained {tuple(w0.shape)}, fine-tuned {tuple(wi.shape)}"
        )
    if (b0 is None) != (bi is None):
        raise FusionBenchError("the pretrained and fine-tuned layers disagree on having a bias")
    dtype = torch.promote_types(w0.dtype, torch.float32)
    delta = svd(wi.to(dtype) - w0.to(dtype), device)
    expert = truncate(delta, k)
    gate = router_projection(truncate(delta if routing_use_diff else svd(wi, device), gate_k))
    bias_delta = None if b0 is None else (bi.to(dtype) - b0.to(dtype)).to(w0.dtype)
    return ExpertFactors(
        u=expert.u.to(w0.dtype).contiguous(),
        svh=(expert.s[:, None] * expert.v.mT).to(w0.dtype).contiguous(),
        gate=gate.to(w0.dtype).contiguous(),
        bias_delta=bias_delta,
    )


def routing_logits(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``r_i(x) = || gate[i] @ x ||_2`` for every expert ``i``.

    Args:
        x: inputs ``[..., n]``.
        gate: stacked router projections ``[E, gate_k, n]`` (rows ``V_i[:, :gate_k]^T``).

    Returns:
        Logits ``[..., E]``.
    """
    num_experts, gate_k, n = gate.shape
    proj = torch.nn.functional.linear(x, gate.reshape(num_experts * gate_k, n))
    return proj.unflatten(-1, (num_experts, gate_k)).norm(p=2, dim=-1)


def topk_routing_weights(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Dense routing weights: softmax over the ``top_k`` largest logits, 0 elsewhere.

    ``w_i = exp(r_i) / sum_{j in topk} exp(r_j)`` for ``i`` in the top-k, else 0. This equals
    the reference implementation's softmax over all experts followed by top-k selection and
    renormalisation (softmax is monotone, and renormalising a subset of a softmax is the
    softmax of that subset). Ties are broken by :func:`torch.topk` (in practice: lower index).

    Args:
        logits: ``[..., E]``.
        top_k: number of experts per input, ``1 <= top_k <= E``.

    Returns:
        Weights ``[..., E]``, non-negative, summing to 1 over the last dim.
    """
    num_experts = logits.shape[-1]
    if not 1 <= top_k <= num_experts:
        raise FusionBenchError(f"top_k must be in [1, {num_experts}] (the experts), got {top_k}")
    values, index = torch.topk(logits, top_k, dim=-1)
    return torch.zeros_like(logits).scatter(-1, index, torch.softmax(values, dim=-1))
