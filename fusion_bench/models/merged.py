"""A model whose weights are a differentiable function of merging coefficients (and a mask).

:class:`TaskVectorMergedModel` is AdaMerging's merged model (Yang et al., "AdaMerging: Adaptive
Model Merging for Multi-Task Learning", arXiv 2310.02575)::

    theta^k = theta_0^k + m^k * sum_i lambda_i^k tau_i^k

for every floating-point state-dict entry ``k`` (each parameter tensor: AdaMerging's "layer";
float buffers such as BatchNorm statistics are merged with the same, detached, coefficients),
task vectors ``tau_i = theta_i - theta_0`` and an optional shared mask ``m`` (Concrete subspace
learning, arXiv 2312.06173: ``sum_i lambda_i (m * tau_i) = m * sum_i lambda_i tau_i``).

The forward pass never copies the network: it computes the merged tensors from the frozen base,
the stacked task vectors and the learnable coefficients, and runs the base module on them with
``torch.func.functional_call``. Gradients reach the coefficients (and the mask's parameters), never
the base or the task vectors. :meth:`TaskVectorMergedModel.merge` writes the merged weights into
the base module and returns it as a plain model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError

MODES = ("task_wise", "layer_wise")


def coefficient_shape(mode: str, num_tasks: int, num_layers: int) -> tuple[int, ...]:
    """``(N,)`` for one lambda per task, ``(N, K)`` for one per task and state-dict entry."""
    if mode == "task_wise":
        return (num_tasks,)
    if mode == "layer_wise":
        return (num_tasks, num_layers)
    raise FusionBenchError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")


def untied_state_dict(module: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without the aliases of tied tensors.

    Tied tensors (T5's shared / encoder / decoder embeddings) are one parameter under several
    names; only the first name is kept, as ``named_parameters`` does. Merging it once, under that
    name, lets ``functional_call`` tie the aliases, so one coefficient (and one mask) drives it
    and the merged model stays tied.
    """
    state = module.state_dict(keep_vars=True)
    first_name: dict[int, str] = {}
    keep = [k for k, v in state.items() if first_name.setdefault(id(v), k) == k]
    if keep_vars:
        return {k: state[k] for k in keep}
    return {k: state[k].detach() for k in keep}


def tied_aliases(module: nn.Module) -> set[str]:
    """State-dict names that :func:`untied_state_dict` leaves out (later names of tied tensors)."""
    return set(module.state_dict()) - set(untied_state_dict(module, keep_vars=True))


class TaskVectorMergedModel(nn.Module):
    """``theta = theta_0 + m * sum_i lambda_i tau_i``, computed functionally at every forward.

    Args:
        base: the pretrained model; frozen and used as the architecture of ``functional_call``.
        task_vectors: ``key -> [N, *shape]`` stacked task vectors, one entry per floating-point
            key of :func:`untied_state_dict` of ``base`` (the keys task arithmetic merges, tied
            aliases once).
        mode: ``"task_wise"`` (one lambda per task) or ``"layer_wise"`` (one per task and key).
        init_value: initial lambda (ignored when ``coefficients`` is given).
        coefficients: initial lambdas of shape :func:`coefficient_shape` instead of ``init_value``.
        clamp_weights: use ``clamp(lambda, 0, 1)`` in the merge (AdaMerging's official code).
        mask: optional module whose ``forward()`` returns one mask per key (in key order) that
            multiplies the merged task vector; its parameters are trainable.
    """

    def __init__(
        self,
        base: nn.Module,
        task_vectors: Mapping[str, torch.Tensor],
        mode: str = "layer_wise",
        init_value: float = 0.3,
        coefficients: torch.Tensor | None = None,
        clamp_weights: bool = False,
        mask: nn.Module | None = None,
    ) -> None:
        super().__init__()
        state = untied_state_dict(base, keep_vars=True)
        float_keys = [k for k, v in state.items() if v.is_floating_point()]
        if list(task_vectors) != float_keys:
            missing = [k for k in float_keys if k not in task_vectors]
            extra = [k for k in task_vectors if k not in float_keys]
            raise FusionBenchError(
                "task vectors must have exactly the base model's floating-point keys in order "
                f"(missing: {missing[:1]}, unexpected: {extra[:1]})"
            )
        sizes = {int(t.shape[0]) for t in task_vectors.values()}
        if len(sizes) != 1:
            raise FusionBenchError(f"task vectors disagree on the number of tasks: {sizes}")
        self.num_tasks = sizes.pop()
        for k, t in task_vectors.items():
            if tuple(t.shape[1:]) != tuple(state[k].shape):
                raise FusionBenchError(
                    f"task vector '{k}' has shape {tuple(t.shape[1:])}, base has {tuple(state[k].shape)}"
                )
        self.keys = float_keys
        params = {n for n, _ in base.named_parameters(remove_duplicate=False)}
        # Float buffers (e.g. BatchNorm statistics) are merged like task arithmetic merges them,
        # but with detached coefficients: kernels such as batch_norm refuse gradients w.r.t. them.
        self._is_buffer = [k not in params for k in self.keys]
        self.mode = mode
        self.clamp_weights = bool(clamp_weights)
        shape = coefficient_shape(mode, self.num_tasks, len(self.keys))
        if coefficients is None:
            coefficients = torch.full(shape, float(init_value))
        elif tuple(coefficients.shape) != shape:
            raise FusionBenchError(
                f"coefficients have shape {tuple(coefficients.shape)}, expected {shape} "
                f"({mode}: {self.num_tasks} tasks x {len(self.keys)} state-dict entries)"
            )
        self.coefficients = nn.Parameter(coefficients.detach().clone().float())
        self._requires_grad = {n: p.requires_grad for n, p in base.named_parameters()}
        self.base = base.requires_grad_(False)
        # Non-persistent buffers: they move with .to(device) but stay out of state_dict().
        for i, k in enumerate(self.keys):
            self.register_buffer(f"tv_{i}", task_vectors[k].detach(), persistent=False)
        self.mask = mask
        self._unloaded = False

    def lambdas(self) -> torch.Tensor:
        """The effective coefficients ``[N, K]`` (clamped to [0, 1] if ``clamp_weights``)."""
        lam = self.coefficients.clamp(0.0, 1.0) if self.clamp_weights else self.coefficients
        if lam.dim() == 1:
            lam = lam.unsqueeze(1).expand(-1, len(self.keys))
        return lam

    def task_vector(self, index: int) -> torch.Tensor:
        """Stacked task vectors ``[N, *shape]`` of the ``index``-th key."""
        return self.get_buffer(f"tv_{index}")

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """``key -> theta_0 + m * sum_i lambda_i tau_i`` for every floating-point key."""
        if self._unloaded:
            raise FusionBenchError("this merged model was unloaded by merge(); use its result")
        state = self.base.state_dict(keep_vars=True)
        out: dict[str, torch.Tensor] = {}
        # Weights are merged in full precision even under mixed-precision autocast (the
        # contraction is a matmul that autocast would run in half precision).
        with torch.autocast(device_type=self.coefficients.device.type, enabled=False):
            lam = self.lambdas()
            masks = self.mask() if self.mask is not None else None
            for i, key in enumerate(self.keys):
                out[key] = self._merge_key(i, lam, masks, state[key])
        return out

    def _merge_key(
        self,
        i: int,
        lam: torch.Tensor,
        masks: list[torch.Tensor] | None,
        base: torch.Tensor,
    ) -> torch.Tensor:
        """``base + m_i * sum_n lam[n, i] tau_n`` for the ``i``-th key."""
        tv = self.task_vector(i)
        lam_i = lam[:, i].detach() if self._is_buffer[i] else lam[:, i]
        # sum_i lambda_i tau_i as one contraction over the task axis (no [N, *shape] temporary)
        delta = torch.tensordot(lam_i.to(tv.dtype), tv, dims=1)
        if masks is not None:
            delta = masks[i].to(delta.dtype) * delta
        return (base.to(delta.dtype) + delta).to(base.dtype)

    def forward(self, *args, **kwargs):
        """Run the base module on the merged weights (``torch.func.functional_call``)."""
        return torch.func.functional_call(
            self.base, self.merged_state_dict(), args, kwargs, tie_weights=True, strict=False
        )

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Load the merged weights into the base module and return it (a plain model).

        The wrapper is unusable afterwards (its base now holds the merged weights).
        """
        merged = {k: v.detach() for k, v in self.merged_state_dict().items()}
        missing, unexpected = self.base.load_state_dict(merged, strict=False)
        if unexpected or set(missing) & set(merged):
            raise FusionBenchError(f"could not load merged weights (unexpected: {unexpected[:1]})")
        self._unloaded = True
        base = self.base
        for name, p in base.named_parameters():
            p.requires_grad_(self._requires_grad.get(name, True))
        return base
