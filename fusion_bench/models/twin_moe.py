"""Twin-Merging's dynamic model: shared layers plus routed low-rank exclusive knowledge.

Lu et al., "Twin-Merging: Dynamic Integration of Modular Expertise in Model Merging",
arXiv 2406.15479. The maths are in :mod:`fusion_bench.merging.twin`. A
:class:`TwinMergingModel` wraps the shared model, whose linear layers are :class:`TwinLinear`
(and, optionally, convolutions :class:`TwinConv` and embeddings :class:`TwinEmbedding`):

1. run the shared model once (no routing) and take its features of the input;
2. ``w(x) = softmax(router(features))`` over tasks;
3. run the model again with every routed layer computing, e.g. for a linear one,
   ``W* x + b* + sum_t w_t(x) (U_t S_t V_t^T x + db_t)``, i.e. the per-sample merged weights
   ``theta* + sum_t w_t(x) v_t`` applied without materialising them.

The routing weights reach the layers through a :class:`contextvars.ContextVar` set for the
duration of step 3 (not module attributes, not a global): calls from different threads or
nested models each see their own weights, and a layer called outside a routed forward is just
the shared layer. Activation checkpointing that recomputes a forward during backward would run
outside that context, so it is not supported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.twin import (
    ExclusiveFactors,
    conv_correction,
    embedding_correction,
    low_rank_correction,
    stack_factors,
)

_ROUTING: ContextVar[torch.Tensor | None] = ContextVar("fusion_bench_twin_routing", default=None)

FEATURES: tuple[str, ...] = ("auto", "pooler", "mean")


@contextmanager
def routing(weights: torch.Tensor | None) -> Iterator[None]:
    """Route every :class:`TwinLinear` called inside the block with ``weights`` ``[B, T]``
    (``None``: the shared model)."""
    token = _ROUTING.set(weights)
    try:
        yield
    finally:
        _ROUTING.reset(token)


def current_routing() -> torch.Tensor | None:
    """The routing weights of the enclosing :func:`routing` block, or ``None``."""
    return _ROUTING.get()


class _TwinModule(nn.Module):
    """A shared module plus the tasks' routed low-rank exclusive knowledge (base class).

    ``forward(x) = shared(x) + correction(x, w)`` with ``w`` the routing weights ``[B, T]`` of
    the enclosing :func:`routing` block (per sample, shared by all tokens / positions of a
    sample); outside one, ``shared(x)``. The factors are buffers (saved in the state dict, moved
    with the module, not trained). ``weight`` / ``bias`` are the shared module's (read-only
    properties): models read them for their dtype or device (e.g. HF CLIP's patch embedding),
    but code that *computes* with ``module.weight`` instead of calling the module bypasses the
    routing and gets the shared layer -- which is why ``nn.MultiheadAttention.out_proj`` is
    never routed.

    Args:
        shared: the shared (merged) module.
        u_cat: ``[rows, T k]`` left factors of the tasks side by side.
        svh_cat: ``[T k, ...]`` ``S_t V_t^T`` of the tasks stacked.
        bias_delta: ``[T, out]`` dense bias deltas; required iff ``shared`` has a bias.
        num_tasks: ``T``.
    """

    def __init__(
        self,
        shared: nn.Module,
        u_cat: torch.Tensor,
        svh_cat: torch.Tensor,
        bias_delta: torch.Tensor | None,
        num_tasks: int,
    ) -> None:
        super().__init__()
        tk = svh_cat.shape[0]
        if num_tasks < 1 or tk % num_tasks or u_cat.dim() != 2 or u_cat.shape[1] != tk:
            raise FusionBenchError(
                f"Twin factors do not hold {num_tasks} tasks of one rank: u {tuple(u_cat.shape)}, "
                f"svh {tuple(svh_cat.shape)}"
            )
        if (getattr(shared, "bias", None) is None) != (bias_delta is None):
            raise FusionBenchError("give bias deltas iff the shared layer has a bias")
        if bias_delta is not None and bias_delta.shape != (num_tasks, u_cat.shape[0]):
            raise FusionBenchError(f"bias_delta must have shape {(num_tasks, u_cat.shape[0])}")
        self.num_tasks, self.rank = int(num_tasks), tk // num_tasks
        self.shared = shared
        self.register_buffer("u_cat", u_cat)
        self.register_buffer("svh_cat", svh_cat)
        self.register_buffer("bias_delta", bias_delta)

    @classmethod
    def from_factors(cls, shared: nn.Module, factors: Sequence[ExclusiveFactors]) -> _TwinModule:
        """Build from one :class:`~fusion_bench.merging.twin.ExclusiveFactors` per task."""
        u_cat, svh_cat, bias = stack_factors(factors)
        # A convolution's factors come flattened ([T k, in * kernel]): back to kernel form.
        svh_cat = svh_cat.reshape(svh_cat.shape[0], *shared.weight.shape[1:])
        return cls(shared, u_cat, svh_cat, bias, len(factors))

    @property
    def weight(self) -> torch.Tensor:
        """The shared module's weight (for dtype / device queries; see the class docstring)."""
        return self.shared.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The shared module's bias, if any."""
        return getattr(self.shared, "bias", None)

    def num_params(self) -> int:
        """Numbers stored: the shared module plus the exclusive factors and bias deltas."""
        return sum(p.numel() for p in self.shared.parameters()) + self.num_exclusive()

    def num_exclusive(self) -> int:
        """Numbers of the exclusive knowledge: ``T k (rows + cols) [+ T out]``."""
        extra = self.u_cat.numel() + self.svh_cat.numel()
        return extra + (0 if self.bias_delta is None else self.bias_delta.numel())

    def correction(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_t weights[:, t] v_t(x)`` for explicit weights ``[B, T]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shared(x)
        weights = current_routing()
        if weights is None:
            return y
        if weights.shape[-1] != self.num_tasks:
            raise FusionBenchError(
                f"routing weights cover {weights.shape[-1]} tasks, this layer has {self.num_tasks}"
            )
        return y + self.correction(x, weights)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, rank={self.rank}"


class TwinLinear(_TwinModule):
    """``y = W* x + b* + sum_t w_t (U_t S_t V_t^T x + (b_t - b*))``: ``T k (m + n)``
    multiply-adds per token on top of the shared ``nn.Linear`` (``u_cat [m, T k]``,
    ``svh_cat [T k, n]``)."""

    def __init__(self, shared: nn.Linear, u_cat, svh_cat, bias_delta, num_tasks: int) -> None:
        m, n = shared.out_features, shared.in_features
        if u_cat.shape[0] != m or svh_cat.dim() != 2 or svh_cat.shape[1] != n:
            raise FusionBenchError(
                f"Twin factors do not fit a Linear({n}, {m}): u {tuple(u_cat.shape)}, "
                f"svh {tuple(svh_cat.shape)}"
            )
        super().__init__(shared, u_cat, svh_cat, bias_delta, num_tasks)
        self.in_features, self.out_features = n, m

    def correction(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return low_rank_correction(x, weights, self.u_cat, self.svh_cat, self.bias_delta)


class TwinConv(_TwinModule):
    """A convolution (``nn.Conv1d/2d/3d``, ``groups=1``) with routed low-rank kernel deltas:
    ``y = conv(x, K*) + b* + sum_t w_t (U_t conv(x, S_t V_t^T) + db_t)`` (``u_cat [out, T k]``,
    ``svh_cat [T k, in, *kernel]``): a ``T k``-channel convolution and a 1x1 mixing."""

    def __init__(self, shared: nn.Module, u_cat, svh_cat, bias_delta, num_tasks: int) -> None:
        if not isinstance(shared, nn.Conv1d | nn.Conv2d | nn.Conv3d) or shared.groups != 1:
            raise FusionBenchError("TwinConv needs an nn.Conv1d/2d/3d with groups=1")
        if u_cat.shape[0] != shared.out_channels or svh_cat.shape[1:] != shared.weight.shape[1:]:
            raise FusionBenchError(
                f"Twin factors do not fit the convolution {tuple(shared.weight.shape)}: "
                f"u {tuple(u_cat.shape)}, svh {tuple(svh_cat.shape)}"
            )
        super().__init__(shared, u_cat, svh_cat, bias_delta, num_tasks)

    def correction(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        def conv(inputs: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
            # the shared layer's own stride / padding (mode) / dilation
            return self.shared._conv_forward(inputs, kernel, None)

        return conv_correction(x, weights, self.u_cat, self.svh_cat, conv, self.bias_delta)


class TwinEmbedding(_TwinModule):
    """An ``nn.Embedding`` with routed low-rank table deltas: row ``i`` is
    ``E*[i] + sum_t w_t U_t[i] S_t V_t^T`` (``u_cat [num, T k]``, ``svh_cat [T k, dim]``)."""

    def __init__(self, shared: nn.Embedding, u_cat, svh_cat, bias_delta, num_tasks: int) -> None:
        if shared.max_norm is not None:
            raise FusionBenchError("TwinEmbedding cannot route an nn.Embedding with max_norm")
        if u_cat.shape[0] != shared.num_embeddings or svh_cat.shape[1:] != (shared.embedding_dim,):
            raise FusionBenchError(
                f"Twin factors do not fit an Embedding({shared.num_embeddings}, "
                f"{shared.embedding_dim}): u {tuple(u_cat.shape)}, svh {tuple(svh_cat.shape)}"
            )
        super().__init__(shared, u_cat, svh_cat, bias_delta, num_tasks)

    def correction(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return embedding_correction(x, weights, self.u_cat, self.svh_cat)


TWIN_MODULES: dict[str, type[_TwinModule]] = {
    "linear": TwinLinear,
    "conv": TwinConv,
    "embedding": TwinEmbedding,
}
"""Kind of routed module -> its wrapper."""


def extract_features(
    output: Any, feature: str = "auto", attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample features ``[B, d]`` of a backbone's forward output, the router's input.

    Args:
        output: what the backbone returned: a model output with ``pooler_output`` and/or
            ``last_hidden_state`` (Hugging Face), a tensor, or a tuple whose first item is one.
        feature: ``"pooler"``: ``output.pooler_output`` (e.g. CLIP's normalised CLS token);
            ``"mean"``: the mean over tokens of the last hidden state (the Twin-Merging reference
            implementation's choice); ``"auto"``: ``pooler_output`` if present, else ``"mean"``.
            A 2-D hidden state is already per sample and is used as is.
        attention_mask: ``[B, L]`` mask of real tokens (text models): the mean runs over them
            only, so padding does not move an input's features.
    """
    if feature not in FEATURES:
        raise FusionBenchError(f"router feature must be one of {FEATURES}, got '{feature}'")
    pooled = getattr(output, "pooler_output", None)
    if feature != "mean" and pooled is not None:
        return pooled
    if feature == "pooler":
        raise FusionBenchError(
            f"router_feature=pooler: the model's output ({type(output).__name__}) has no "
            "pooler_output; use router_feature=mean"
        )
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() < 2:
        raise FusionBenchError(
            f"cannot take router features from a {type(output).__name__}: expected an output "
            "with pooler_output / last_hidden_state or a [batch, ...] tensor"
        )
    if hidden.dim() == 2:
        return hidden
    if attention_mask is not None and hidden.dim() == 3:
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return hidden.flatten(1, -2).mean(dim=1)


class TwinRouter(nn.Module):
    """The Twin-Merging router: an MLP from features ``[B, d]`` to task logits ``[B, T]``.

    The reference implementation's ``SimpleMLP``: ``Linear(d, h) -> BatchNorm -> LeakyReLU ->
    Dropout -> Linear(h, h) -> BatchNorm -> LeakyReLU -> Dropout -> Linear(h, T)``, ``h = 2 d``.

    Args:
        in_features: ``d``.
        num_tasks: ``T``.
        hidden: ``h``; ``None``: ``2 d``.
        dropout: dropout probability (0.5 in the reference).
    """

    def __init__(
        self, in_features: int, num_tasks: int, hidden: int | None = None, dropout: float = 0.5
    ) -> None:
        super().__init__()
        h = 2 * in_features if hidden is None else int(hidden)
        self.net = nn.Sequential(
            nn.Linear(in_features, h),
            nn.BatchNorm1d(h),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Linear(h, num_tasks),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Features come from a frozen model in any precision; the router trains in float32.
        return self.net(features.float())


class TwinMergingModel(nn.Module):
    """Drop-in replacement for the backbone: routes each input, then runs the dynamic model.

    ``forward(*args, **kwargs)`` takes the backbone's own arguments (e.g. ``pixel_values=``)
    and returns the backbone's output for the per-sample merged weights
    ``theta* + sum_t softmax(router(f*(x)))_t v_t``, where ``f*`` is the shared model's
    features (:func:`extract_features`). Parameters outside the routed layers
    (layer norms, raw ``nn.Parameter`` s, non-routed module kinds) stay at their shared values.

    Args:
        backbone: the shared model whose linear layers are :class:`TwinLinear`.
        router: maps features ``[B, d]`` to task logits ``[B, T]``.
        feature: router input, see :func:`extract_features`.
        task_names: task of each routing index (for reports; default ``0..T-1``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        router: nn.Module,
        feature: str = "auto",
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if feature not in FEATURES:
            raise FusionBenchError(f"router feature must be one of {FEATURES}, got '{feature}'")
        self.backbone = backbone
        self.router = router
        self.feature = feature
        self.task_names = list(task_names) if task_names is not None else None

    @torch.no_grad()
    def features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The shared model's features of the input (no routing, no gradient); for an
        encoder-decoder model, of its encoder (the input, not the answer being decoded)."""
        with routing(None):
            output = self._input_encoder()(*args, **kwargs)
            return extract_features(output, self.feature, kwargs.get("attention_mask"))

    def _input_encoder(self) -> nn.Module:
        config = getattr(self.backbone, "config", None)
        if getattr(config, "is_encoder_decoder", False):
            return self.backbone.get_encoder()
        return self.backbone

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw):
        """The backbone's ``generate`` with every routed layer routed for the whole decoding by
        the weights of each row's input (rows keep their order in greedy / sampled decoding)."""
        if not hasattr(self.backbone, "generate"):
            raise FusionBenchError(f"{type(self.backbone).__name__} cannot generate text")
        mask = {} if attention_mask is None else {"attention_mask": attention_mask}
        weights = self.routing_weights(input_ids=input_ids, **mask)
        with routing(weights):
            return self.backbone.generate(input_ids=input_ids, **mask, **kw)

    def routing_weights(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``softmax(router(features))`` over tasks, ``[B, T]`` in float32."""
        return torch.softmax(self.router(self.features(*args, **kwargs)).float(), dim=-1)

    def forward_routed(self, weights: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The backbone with every :class:`TwinLinear` routed by the given ``weights [B, T]``."""
        with routing(weights):
            return self.backbone(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward_routed(self.routing_weights(*args, **kwargs), *args, **kwargs)
