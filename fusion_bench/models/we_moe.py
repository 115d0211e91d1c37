"""Weight-ensembling mixture-of-experts module (WEMoE).

Tang et al., "Merging Multi-Task Models via Weight-Ensembling Mixture of Experts",
arXiv 2402.00433. A Transformer MLP with pretrained weights ``theta_0`` and task vectors
``tau_1..tau_N`` (``tau_i = theta_i - theta_0`` of that MLP) becomes, for an input sample with
tokens ``h_1..h_T``::

    w(h)     = mean_t r(h_t)                       (router r: MLP over each token, R^D -> R^N)
    theta(h) = theta_0 + sum_i w_i(h) tau_i         (input-conditioned MLP weights)
    y_t      = MLP(h_t; theta(h))

The module is computed functionally: the pretrained MLP is called through
:func:`torch.func.functional_call` with the merged weights, vectorised over the samples of a
batch with :func:`torch.vmap` (one merged weight set per sample, no Python loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from fusion_bench.errors import FusionBenchError

ROUTER_INIT_STD = 0.01
"""Std of the router's hidden-layer weights at init (the reference implementation's value)."""


class WeightEnsemblingRouter(nn.Module):
    """Router ``r: R^D -> R^N`` of a WEMoE module, applied to each token.

    ``num_layers`` linear layers: ``num_layers - 1`` hidden ``D -> D`` layers with ReLU, then
    ``D -> N`` (the paper's router has ``num_layers = 2``: ``W_2 ReLU(W_1 h + b_1) + b_2``).
    ``num_layers = 0`` is an input-independent weight vector (task-wise AdaMerging on the MLP).

    Initialisation: hidden weights ``N(0, 0.01^2)`` and zero biases as in the reference
    implementation; the last layer has **zero weights** and bias ``init_lambda`` (the reference
    draws them from ``N(0, 0.01^2)``), so at init ``r(h) = init_lambda`` exactly and the module
    is task arithmetic with ``lambda = init_lambda``. The hidden layers start learning from the
    second step, once the last layer's weights have moved off zero.

    Args:
        hidden_size: ``D``, the size of the tokens.
        num_experts: ``N``.
        num_layers: number of linear layers (0, 1, 2, ...).
        init_lambda: the routing weight of every expert at init.
        generator: source of the hidden layers' random init (``None``: the global RNG).
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        num_layers: int = 2,
        init_lambda: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 0:
            raise FusionBenchError(f"router_hidden_layers must be >= 0, got {num_layers}")
        self.num_layers = int(num_layers)
        self.num_experts = int(num_experts)
        if self.num_layers == 0:
            self.weight = nn.Parameter(torch.full((num_experts,), float(init_lambda)))
            self.layers = None
            return
        layers: list[nn.Module] = []
        for _ in range(self.num_layers - 1):
            linear = nn.Linear(hidden_size, hidden_size)
            nn.init.normal_(linear.weight, std=ROUTER_INIT_STD, generator=generator)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        last = nn.Linear(hidden_size, num_experts)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, float(init_lambda))
        self.layers = nn.Sequential(*layers, last)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Per-token routing weights ``[..., N]`` for tokens ``[..., D]``."""
        if self.layers is None:
            return self.weight.expand(*hidden_states.shape[:-1], self.num_experts)
        return self.layers(hidden_states)


def _input_size(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise FusionBenchError(
        f"cannot infer the input size of a {type(module).__name__} (it has no nn.Linear): "
        "give hidden_size explicitly"
    )


def _param_key(name: str) -> str:
    # ParameterDict keys cannot contain '.'; '__' keeps state-dict keys readable.
    return name.replace(".", "__")


class WeightEnsemblingMoE(nn.Module):
    """An MLP upscaled into a weight-ensembling MoE: ``MLP(h; theta_0 + sum_i w_i(h) tau_i)``.

    Routing is **per sample**, as in the paper and the reference implementation: the router runs
    on every token and its outputs are averaged over the tokens of each sample (dim ``-2`` of the
    input), giving one merged MLP per sample. Inputs are ``[*batch, tokens, D]`` with any number
    of leading batch dims (none: a single sample).

    ``batch_reduce = True`` additionally averages the routing weights over the whole batch (one
    merged MLP per batch): the reference implementation trains its routers this way to save
    memory and switches it off for evaluation.

    The pretrained MLP and the task vectors are frozen parameters (they count in
    ``parameters()``, but receive no gradients); only the router trains.

    Args:
        pretrained: the pretrained MLP module (kept, frozen, and called functionally).
        task_vectors: ``state-dict key of pretrained -> [N, *shape]`` stacked task vectors, for
            floating-point entries of ``pretrained.state_dict()``; other entries stay pretrained.
        init_lambda: routing weight of every expert at init.
        router_hidden_layers: number of linear layers of the router (the paper: 2).
        hidden_size: router input size; ``None``: ``in_features`` of the first ``nn.Linear``.
        batch_reduce: share one set of routing weights across the batch (see above).
        generator: source of the router's random init (``None``: the global RNG).
    """

    def __init__(
        self,
        pretrained: nn.Module,
        task_vectors: Mapping[str, torch.Tensor],
        init_lambda: float = 0.3,
        router_hidden_layers: int = 2,
        hidden_size: int | None = None,
        batch_reduce: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not task_vectors:
            raise FusionBenchError("a WeightEnsemblingMoE needs task vectors for at least one key")
        state = pretrained.state_dict()
        num_experts = None
        for key, tv in task_vectors.items():
            if key not in state or not state[key].is_floating_point():
                raise FusionBenchError(
                    f"task vector key '{key}' is not a floating-point entry of the pretrained "
                    f"{type(pretrained).__name__} (entries: {', '.join(state)})"
                )
            num_experts = tv.shape[0] if num_experts is None else num_experts
            if tuple(tv.shape) != (num_experts, *state[key].shape):
                raise FusionBenchError(
                    f"task vectors of '{key}' have shape {tuple(tv.shape)}, expected "
                    f"{(num_experts, *state[key].shape)} (experts stacked on dim 0)"
                )
        self.pretrained = pretrained.requires_grad_(False)
        self.keys = list(task_vectors)
        self.task_vectors = nn.ParameterDict(
            {
                _param_key(k): nn.Parameter(tv.to(state[k].dtype), requires_grad=False)
                for k, tv in task_vectors.items()
            }
        )
        self.num_experts = int(num_experts)
        hidden = _input_size(pretrained) if hidden_size is None else int(hidden_size)
        self.router = WeightEnsemblingRouter(
            hidden, self.num_experts, router_hidden_layers, init_lambda, generator
        )
        self.batch_reduce = bool(batch_reduce)

    @classmethod
    def from_experts(
        cls, pretrained: nn.Module, experts: Sequence[nn.Module], **kwargs
    ) -> WeightEnsemblingMoE:
        """Build from the pretrained MLP and the experts' MLPs (same architecture)."""
        base = pretrained.state_dict()
        sds = [e.state_dict() for e in experts]
        tvs = {
            k: torch.stack([sd[k] - v for sd in sds])
            for k, v in base.items()
            if v.is_floating_point()
        }
        return cls(pretrained, tvs, **kwargs)

    def task_vector(self, key: str) -> torch.Tensor:
        """Stacked task vectors ``[N, *shape]`` of the pretrained MLP's entry ``key``."""
        return self.task_vectors[_param_key(key)]

    def routing_weights(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Per-sample routing weights ``[*batch, N]``: the router's output averaged over tokens."""
        if hidden_states.dim() < 2:
            raise FusionBenchError(
                f"WeightEnsemblingMoE expects inputs [*batch, tokens, dim], got shape "
                f"{tuple(hidden_states.shape)}"
            )
        return self.router(hidden_states).mean(dim=-2)

    def merged_params(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``theta_0 + sum_i w_i tau_i`` for routing weights ``[*batch, N]`` -> ``[*batch, *shape]``."""
        base = dict(self.pretrained.named_parameters())
        base.update(self.pretrained.named_buffers())
        out = {}
        for k in self.keys:
            tv = self.task_vector(k)
            delta = torch.tensordot(weights.to(tv.dtype), tv, dims=([-1], [0]))
            out[k] = base[k] + delta
        return out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``MLP(h; theta(h))`` for ``hidden_states`` ``[*batch, tokens, D]``."""
        weights = self.routing_weights(hidden_states)
        batch = hidden_states.shape[:-2]
        if self.batch_reduce or not batch:
            params = self.merged_params(weights.reshape(-1, self.num_experts).mean(dim=0))
            return functional_call(self.pretrained, params, (hidden_states,))
        flat = hidden_states.reshape(-1, *hidden_states.shape[-2:])
        params = self.merged_params(weights.reshape(-1, self.num_experts))

        def one_sample(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.pretrained, p, (x,))

        out = torch.vmap(one_sample)(params, flat)
        return out.reshape(*batch, *out.shape[1:])

    def num_task_vector_nonzeros(self) -> int:
        """Non-zero task-vector entries (what a sparse format would store)."""
        return sum(int(torch.count_nonzero(p)) for p in self.task_vectors.values())

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, batch_reduce={self.batch_reduce}"
