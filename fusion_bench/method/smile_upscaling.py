"""SMILE upscaling: linear layers become the pretrained layer plus a sparse mixture of SVD experts."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import check_compatible
from fusion_bench.merging.svd import FULL_RANK, ExpertFactors, smile_expert_factors
from fusion_bench.merging.task_arithmetic import compute_dtype
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.smile_moe import SmileMoELinear

if TYPE_CHECKING:
    from fusion_bench.modelpool.base import BaseModelPool


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SmileUpscaling(BaseMethod):
    """SMILE: zero-shot sparse mixture of low-rank experts, data-free.

    Tang et al., "SMILE: Zero-Shot Sparse Mixture of Low-Rank Experts Construction From
    Pre-Trained Foundation Models", arXiv 2408.10174. Every targeted ``nn.Linear`` of the
    pretrained model (``W_0``, ``b_0``) is replaced by a
    :class:`~fusion_bench.models.smile_moe.SmileMoELinear`::

        W_i - W_0 = U_i S_i V_i^T                                  (SVD, one per expert)
        r_i(x)    = || V_i[:, :gate_k]^T x ||_2                    (routing logits)
        y         = W_0 x + b_0 + sum_{i in topk(r)} softmax_topk(r)_i
                                  (U_i[:, :k] S_i[:k] V_i[:, :k]^T x + b_i - b_0)

    Choices, following the paper and the reference implementation (upstream FusionBench
    ``SmileUpscalingAlgorithm``):

    - **Biases**: each expert keeps its bias delta ``b_i - b_0``, routed with its low-rank
      weight delta; ``b_0`` stays in the shared part.
    - **Targeted layers**: by default every ``nn.Linear`` of the model, as the reference does
      (for a HF ``CLIPVisionModel`` these are the q/k/v/out projections and fc1/fc2 of every
      encoder block: the model has no other linear layer). A layer whose experts all equal the
      pretrained layer is kept as is (nothing to route). ``out_proj`` of ``nn.MultiheadAttention``
      is never upscaled: that module reads ``out_proj.weight`` directly instead of calling it.
    - **Other parameters** (embeddings, layer norms, non-targeted layers): kept pretrained by
      default (the reference's ``average_experts: false``, which the published runs used);
      ``average_experts=True`` replaces them by the experts' mean (a baseline).

    Experts are streamed: the pretrained model, the SVD factors computed so far and one expert
    are in memory. Factors take ``E (k (m + n) + gate_k n + m)`` numbers per ``[m, n]`` layer.
    The SVDs are exact reduced SVDs (``torch.linalg.svd``) in float32 or wider.

    Args:
        gate_k: router rank: number of top right singular vectors of ``W_i - W_0`` on which the
            input is projected (``-1``: all).
        k: expert rank (``-1``: full rank, i.e. each expert is its exact weight delta).
        top_k: experts per input (token), ``1 <= top_k <= number of experts``.
        routing_use_diff: route on the singular vectors of ``W_i - W_0`` (the paper); ``False``
            uses those of ``W_i`` (the reference's ablation).
        average_experts: set the non-upscaled parameters to the experts' mean instead of
            keeping them pretrained.
        target_modules: names of the linear modules to upscale; ``None``: every
            ``nn.Linear``. Each entry is a glob matched against the full module name (e.g.
            ``encoder.layers.*.mlp.fc1``) or against its trailing components (``fc1``,
            ``mlp.fc2``). An entry that matches no linear layer is an error.
        svd_device: device on which to compute the SVDs (e.g. ``"cuda"`` for large models);
            ``None`` computes where the weights are. The result stays on the pretrained
            model's device.
    """

    def __init__(
        self,
        gate_k: int = 16,
        k: int = 32,
        top_k: int = 1,
        routing_use_diff: bool = True,
        average_experts: bool = False,
        target_modules: Sequence[str] | None = None,
        svd_device: str | None = None,
    ) -> None:
        for name, value in (("gate_k", gate_k), ("k", k)):
            if int(value) != FULL_RANK and int(value) < 1:
                raise FusionBenchError(
                    f"smile_upscaling: {name} must be a positive integer or {FULL_RANK} (full "
                    f"rank), got {value}"
                )
        if int(top_k) < 1:
            raise FusionBenchError(f"smile_upscaling: top_k must be >= 1, got {top_k}")
        if isinstance(target_modules, str):
            target_modules = [target_modules]
        self.gate_k = int(gate_k)
        self.k = int(k)
        self.top_k = int(top_k)
        self.routing_use_diff = bool(routing_use_diff)
        self.average_experts = bool(average_experts)
        self.target_modules = None if target_modules is None else [str(t) for t in target_modules]
        self.svd_device = svd_device
        self._report: dict[str, Any] = {}

    # -- which layers ----------------------------------------------------------------------
    def _matches(self, name: str, pattern: str) -> bool:
        return fnmatchcase(name, pattern) or fnmatchcase(name, f"*.{pattern}")

    def select_targets(self, model: nn.Module) -> list[str]:
        """Names of the ``nn.Linear`` modules of ``model`` to upscale, in module order.

        Raises:
            FusionBenchError: if a ``target_modules`` entry matches no linear layer, or targets
                an ``nn.MultiheadAttention.out_proj``.
        """
        excluded = {
            f"{parent}.out_proj" if parent else "out_proj"
            for parent, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention)
        }
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
        if self.target_modules is None:
            return [n for n in linears if n not in excluded]
        targets = []
        for pattern in self.target_modules:
            hits = [n for n in linears if self._matches(n, pattern)]
            if not hits:
                raise FusionBenchError(
                    f"smile_upscaling: target_modules entry '{pattern}' matches no nn.Linear; "
                    f"linear layers look like '{linears[0] if linears else '(none)'}'"
                )
            bad = [n for n in hits if n in excluded]
            if bad:
                raise FusionBenchError(
                    f"smile_upscaling: '{bad[0]}' belongs to an nn.MultiheadAttention, which "
                    "reads its weight directly: it cannot be upscaled"
                )
            targets += [n for n in hits if n not in targets]
        return [n for n in linears if n in targets]

    # -- the method ------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the pretrained model with its targeted linear layers upscaled."""
        self._report = {}
        n_experts = len(pool)
        if n_experts == 0:
            raise FusionBenchError("smile_upscaling needs at least one expert in the pool")
        if self.top_k > n_experts:
            raise FusionBenchError(
                f"smile_upscaling: top_k={self.top_k} exceeds the {n_experts} experts of the pool"
            )
        model = pool.load_pretrained()
        params_pretrained = _num_params(model)
        targets = self.select_targets(model)
        if not targets:
            raise FusionBenchError("smile_upscaling: the pretrained model has no nn.Linear layer")
        base = model.state_dict()
        target_keys = {f"{t}.{p}" for t in targets for p in ("weight", "bias")}
        factors: dict[str, list[ExpertFactors]] = {t: [] for t in targets}
        changed = dict.fromkeys(targets, False)
        average: dict[str, torch.Tensor] = {}

        from tqdm.auto import tqdm

        for name, sd in iter_state_dicts(pool, desc="SmileUpscaling"):
            check_compatible(base, PRETRAINED, sd, name)
            for t in tqdm(targets, desc=f"SVD {name}", unit="layer", leave=False):
                w0, wi = base[f"{t}.weight"], sd[f"{t}.weight"]
                b0, bi = base.get(f"{t}.bias"), sd.get(f"{t}.bias")
                changed[t] |= not torch.equal(w0, wi) or (
                    b0 is not None and not torch.equal(b0, bi)
                )
                factors[t].append(
                    smile_expert_factors(
                        w0, wi, self.k, self.gate_k, b0, bi, self.routing_use_diff, self.svd_device
                    )
                )
            if self.average_experts:
                for key, v in sd.items():
                    if key in target_keys or not v.is_floating_point():
                        continue
                    v = v.to(compute_dtype(v.dtype)) / n_experts
                    average[key] = average[key].add_(v) if key in average else v.clone()
            del sd  # free the expert before the next one is loaded

        upscaled = [t for t in targets if changed[t]]
        for t in upscaled:
            parent_name, _, child = t.rpartition(".")
            parent = model.get_submodule(parent_name)
            layer = SmileMoELinear.from_factors(model.get_submodule(t), factors.pop(t), self.top_k)
            setattr(parent, child, layer)
        if self.average_experts:
            # Not-upscaled targets (identical experts) average to their pretrained value anyway.
            for key, v in average.items():
                base[key].copy_(v.to(base[key].dtype))
        params_upscaled = _num_params(model)
        self._report = {
            "params_pretrained": params_pretrained,
            "params_upscaled": params_upscaled,
            "params_ratio": params_upscaled / params_pretrained,
            "layers_upscaled": len(upscaled),
            "layers_kept_pretrained": len(targets) - len(upscaled),
        }
        return model

    def extra_report(self) -> dict[str, Any]:
        """Parameter counts of the last run: pretrained, upscaled and their ratio."""
        return dict(self._report)
