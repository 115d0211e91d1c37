"""SMILE mixture-of-low-rank-experts linear layer.

Tang et al., "SMILE: Zero-Shot Sparse Mixture of Low-Rank Experts Construction From
Pre-Trained Foundation Models", arXiv 2408.10174. The maths (SVD, router, top-k weights) are
in :mod:`fusion_bench.merging.svd`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.svd import (
    ExpertFactors,
    routing_logits,
    smile_expert_factors,
    topk_routing_weights,
)


def smile_linear_num_params(
    in_features: int, out_features: int, num_experts: int, k: int, gate_k: int, bias: bool
) -> int:
    """Parameters of a :class:`SmileMoELinear` with effective ranks ``k`` and ``gate_k``.

    ``m n + m [bias]`` for the shared pretrained layer, plus per expert ``k (m + n)`` for
    ``U_k`` and ``S_k V_k^T``, ``m [bias]`` for the bias delta and ``gate_k n`` for the router
    (``m = out_features``, ``n = in_features``).
    """
    m, n = out_features, in_features
    per_expert = k * (m + n) + gate_k * n + (m if bias else 0)
    return m * n + (m if bias else 0) + num_experts * per_expert


class SmileMoELinear(nn.Module):
    """A linear layer upscaled into the pretrained layer plus a sparse mixture of SVD experts.

    For an input ``x`` (any leading dims, last dim ``in_features``)::

        r_i(x) = || V_i[:, :gate_k]^T x ||_2                              (router logits)
        w(x)   = softmax over the top_k largest r_i(x), 0 for the others
        y      = W_0 x + b_0 + sum_i w_i(x) (U_i,k S_i,k V_i,k^T x + (b_i - b_0))

    where ``W_i - W_0 = U_i S_i V_i^T``. Each expert carries its own bias delta, routed with
    it, as in the reference implementation (upstream FusionBench ``SmileMoELinear``); since
    the weights sum to 1, with ``top_k = 1`` the bias is exactly that of the chosen expert, so
    a full-rank expert routed to reproduces its fine-tuned layer exactly.

    All experts are evaluated in one batched contraction with the routing weights scattered
    densely (zeros for unselected experts): ``O(E k (m + n))`` per token, which for
    ``k << min(m, n)`` is cheaper than dispatching tokens expert by expert, and has no Python
    loop over tokens or experts.

    The layer's ``weight`` is deliberately ``None``: code that computes with ``linear.weight``
    instead of calling the module (e.g. ``nn.MultiheadAttention``) must fail loudly rather
    than silently use the pretrained weight, while code that only inspects it keeps working
    (T5's feed-forward casts its input to ``wo.weight.dtype`` only if that is a tensor).

    Args:
        pretrained: the pretrained ``nn.Linear`` (the shared part, kept as is).
        u: ``[E, m, k]`` stacked ``U_i[:, :k]``.
        svh: ``[E, k, n]`` stacked ``S_i[:k] V_i[:, :k]^T``.
        gate: ``[E, gate_k, n]`` stacked ``V_i[:, :gate_k]^T``.
        bias_delta: ``[E, m]`` stacked ``b_i - b_0``; required iff ``pretrained`` has a bias.
        top_k: experts per input (``1 <= top_k <= E``).
    """

    weight = None  # see the class docstring: reading it to compute fails, inspecting it works

    def __init__(
        self,
        pretrained: nn.Linear,
        u: torch.Tensor,
        svh: torch.Tensor,
        gate: torch.Tensor,
        bias_delta: torch.Tensor | None,
        top_k: int = 1,
    ) -> None:
        super().__init__()
        m, n = pretrained.out_features, pretrained.in_features
        num_experts = u.shape[0]
        if (
            u.dim() != 3
            or u.shape[1] != m
            or svh.shape != (num_experts, u.shape[2], n)
            or gate.dim() != 3
            or gate.shape[0] != num_experts
            or gate.shape[2] != n
        ):
            raise FusionBenchError(
                f"SMILE factors do not fit a Linear({n}, {m}): u {tuple(u.shape)}, svh "
                f"{tuple(svh.shape)}, gate {tuple(gate.shape)}"
            )
        if (pretrained.bias is None) != (bias_delta is None):
            raise FusionBenchError("give bias deltas iff the pretrained layer has a bias")
        if bias_delta is not None and bias_delta.shape != (num_experts, m):
            raise FusionBenchError(f"bias_delta must have shape {(num_experts, m)}")
        if not 1 <= top_k <= num_experts:
            raise FusionBenchError(f"top_k must be in [1, {num_experts}], got {top_k}")
        self.in_features, self.out_features = n, m
        self.num_experts, self.top_k = num_experts, int(top_k)
        self.k, self.gate_k = u.shape[2], gate.shape[1]
        self.pretrained = pretrained
        self.u = nn.Parameter(u)
        self.svh = nn.Parameter(svh)
        self.gate = nn.Parameter(gate)
        self.bias_delta = None if bias_delta is None else nn.Parameter(bias_delta)

    @classmethod
    def from_factors(
        cls, pretrained: nn.Linear, experts: Sequence[ExpertFactors], top_k: int = 1
    ) -> SmileMoELinear:
        """Stack per-expert :class:`~fusion_bench.merging.svd.ExpertFactors`."""
        if not experts:
            raise FusionBenchError("a SMILE layer needs at least one expert")
        bias = (
            None if experts[0].bias_delta is None else torch.stack([e.bias_delta for e in experts])
        )
        return cls(
            pretrained,
            u=torch.stack([e.u for e in experts]),
            svh=torch.stack([e.svh for e in experts]),
            gate=torch.stack([e.gate for e in experts]),
            bias_delta=bias,
            top_k=top_k,
        )

    @classmethod
    @torch.no_grad()
    def from_linears(
        cls,
        pretrained: nn.Linear,
        experts: Sequence[nn.Linear],
        k: int = 32,
        gate_k: int = 16,
        top_k: int = 1,
        routing_use_diff: bool = True,
    ) -> SmileMoELinear:
        """Build from the pretrained layer and the fine-tuned layers (SVD of each delta)."""
        factors = [
            smile_expert_factors(
                pretrained.weight,
                e.weight,
                k,
                gate_k,
                pretrained.bias,
                e.bias,
                routing_use_diff=routing_use_diff,
            )
            for e in experts
        ]
        return cls.from_factors(pretrained, factors, top_k)

    def num_params(self) -> int:
        """:func:`smile_linear_num_params` of this layer."""
        return smile_linear_num_params(
            self.in_features,
            self.out_features,
            self.num_experts,
            self.k,
            self.gate_k,
            self.bias_delta is not None,
        )

    def routing_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``r_i(x) = ||V_i[:, :gate_k]^T x||_2``, shape ``[..., E]``."""
        return routing_logits(x, self.gate)

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Dense top-k softmax weights ``[..., E]`` (zeros for unselected experts)."""
        return topk_routing_weights(self.routing_logits(x), self.top_k)

    def experts_output(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_i weights[..., i] (U_i S_i V_i^T x + (b_i - b_0))``, shape ``[..., m]``.

        Public so that callers (and tests) can mix the experts with given weights, e.g. a
        one-hot vector to force an expert.
        """
        z = torch.einsum("...n,ekn->...ek", x, self.svh) * weights.unsqueeze(-1)
        out = torch.einsum("...ek,emk->...m", z, self.u)
        if self.bias_delta is not None:
            out = out + weights @ self.bias_delta
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``W_0 x + b_0 + sum_{i in topk} w_i(x) (U_i S_i V_i^T x + (b_i - b_0))``."""
        return self.pretrained(x) + self.experts_output(x, self.routing_weights(x))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={self.num_experts}, top_k={self.top_k}, k={self.k}, "
            f"gate_k={self.gate_k}"
        )
