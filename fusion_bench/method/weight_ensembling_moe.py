"""WEMoE: task arithmetic everywhere but the MLPs, which become routed weight-ensembling MoEs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.prune import check_prune_ratio, magnitude_prune
from fusion_bench.merging.task_arithmetic import apply_task_vector, task_vector
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.we_moe import WeightEnsemblingMoE

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class WeightEnsemblingMoEAlgorithm(BaseMethod):
    """Weight-Ensembling Mixture of Experts, trained by test-time entropy minimisation.

    Tang et al., "Merging Multi-Task Models via Weight-Ensembling Mixture of Experts",
    arXiv 2402.00433. With task vectors ``tau_i = theta_i - theta_0``:

    - every parameter outside the Transformer MLPs is merged by task arithmetic,
      ``theta = theta_0 + lambda sum_i tau_i`` with ``lambda = init_lambda``;
    - every MLP (``pool.mlp_names(model)``) becomes a
      :class:`~fusion_bench.models.we_moe.WeightEnsemblingMoE`: for a sample with tokens
      ``h_1..h_T``, ``w(h) = mean_t r(h_t)`` and the MLP runs with
      ``theta_0^mlp + sum_i w_i(h) tau_i^mlp``, where the router ``r`` is a small MLP
      initialised to output ``init_lambda`` for every expert (so at init the model *is* task
      arithmetic);
    - the routers (only they) are trained by minimising the summed prediction entropy on
      unlabelled test batches of every task (AdaMerging's objective, Yang et al.,
      arXiv 2310.02575), with Adam, through
      :func:`fusion_bench.method.test_time.minimise_entropy`.

    ``sparse_weight_ensembling_moe`` is this class with ``tv_prune_ratio: 0.9``: each MLP task
    vector tensor keeps only its top 10% entries by magnitude, per expert and per tensor, as in
    the reference implementation and E-WEMoE (Shen et al., "Efficient and Effective
    Weight-Ensembling Mixture of Experts for Multi-Task Model Merging", arXiv 2410.21804). The
    pruned task vectors are stored dense with zeros (same memory as the dense variant);
    ``extra_report`` gives the non-zero count a sparse format would store.

    Routing is per sample (tokens averaged), the paper's formulation, at training and at
    evaluation. ``batch_reduce=True`` instead trains with one routing vector per batch (each
    training batch comes from one task), as the reference implementation's published runs did
    to save memory; evaluation is per sample either way.

    Args:
        init_lambda: task-arithmetic scaling of the non-MLP parameters, and every router's
            initial output.
        router_hidden_layers: number of linear layers of each router (the paper: 2, ReLU in
            between, hidden size = the MLP's input size; 0 = a learnable weight per expert).
        tv_prune_ratio: fraction of each MLP task vector tensor's entries zeroed by magnitude
            (0 = dense WEMoE).
        batch_reduce: during training only, share routing weights across each batch.
        lr: Adam learning rate of the routers.
        max_steps: test-time adaptation steps (0: return the model at init, i.e. task
            arithmetic with MoE modules).
        batch_size: unlabelled test images per task per step.
        seed: seed of the routers' init and of the data order.
    """

    def __init__(
        self,
        init_lambda: float = 0.3,
        router_hidden_layers: int = 2,
        tv_prune_ratio: float = 0.0,
        batch_reduce: bool = False,
        lr: float = 1e-4,
        max_steps: int = 1000,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        check_prune_ratio(float(tv_prune_ratio))
        if int(router_hidden_layers) < 0:
            raise FusionBenchError(f"router_hidden_layers must be >= 0, got {router_hidden_layers}")
        if int(max_steps) < 0 or int(batch_size) < 1:
            raise FusionBenchError(
                f"max_steps must be >= 0 and batch_size >= 1, got {max_steps} and {batch_size}"
            )
        self.init_lambda = float(init_lambda)
        self.router_hidden_layers = int(router_hidden_layers)
        self.tv_prune_ratio = float(tv_prune_ratio)
        self.batch_reduce = bool(batch_reduce)
        self.lr = float(lr)
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._report: dict[str, Any] = {}
        self._routers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def upscale(self, pool: BaseModelPool) -> nn.Module:
        """The untrained WEMoE model: task arithmetic outside the MLPs, MoE modules inside.

        Experts are streamed one state dict at a time; the memory held is the pretrained
        model, the running non-MLP task-vector sum and the N stacked MLP task vectors.
        """
        n = len(pool)
        if n == 0:
            raise FusionBenchError("weight_ensembling_moe needs at least one expert in the pool")
        model = pool.load_pretrained().requires_grad_(False)
        mlps = pool.mlp_names(model)
        if not mlps:
            raise FusionBenchError("weight_ensembling_moe: the model pool declares no MLP blocks")
        base = model.state_dict()  # shares the model's storage
        # MLP entries (floating point) get per-expert stacks; the rest is summed.
        mlp_keys = {
            m: [k for k, v in model.get_submodule(m).state_dict().items() if v.is_floating_point()]
            for m in mlps
        }
        stacked: dict[str, torch.Tensor] = {}
        for m, keys in mlp_keys.items():
            for k in keys:
                t = base[f"{m}.{k}"]
                stacked[f"{m}.{k}"] = t.new_empty((n, *t.shape))
        tv_sum: dict[str, torch.Tensor] = {}
        for i, (name, sd) in enumerate(iter_state_dicts(pool, desc=type(self).__name__)):
            tv = task_vector(sd, base, name, PRETRAINED)
            del sd  # free the expert before the next one is loaded
            for key, out in stacked.items():
                t = tv.pop(key)
                out[i] = magnitude_prune(t, self.tv_prune_ratio) if self.tv_prune_ratio else t
            if i == 0:
                tv_sum = tv
            else:
                for k, v in tv.items():
                    tv_sum[k].add_(v)
            del tv
        rest = {k: v for k, v in base.items() if k not in stacked}
        for k, v in apply_task_vector(rest, tv_sum, self.init_lambda).items():
            base[k].copy_(v)
        del tv_sum

        generator = torch.Generator().manual_seed(self.seed)
        for m in mlps:
            parent_name, _, child = m.rpartition(".")
            moe = WeightEnsemblingMoE(
                model.get_submodule(m),
                {k: stacked.pop(f"{m}.{k}") for k in mlp_keys[m]},
                init_lambda=self.init_lambda,
                router_hidden_layers=self.router_hidden_layers,
                generator=generator,
            )
            setattr(model.get_submodule(parent_name), child, moe)
        return model

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Upscale the pretrained model, train its routers, return it (per-sample routing)."""
        from fusion_bench.method.test_time import minimise_entropy

        model = self.upscale(pool)
        moes = {n: m for n, m in model.named_modules() if isinstance(m, WeightEnsemblingMoE)}
        history: list[float] = []
        if self.max_steps > 0:
            for moe in moes.values():
                moe.batch_reduce = self.batch_reduce
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(trainable, lr=self.lr)
            history = minimise_entropy(
                self.get_fabric(),
                model,
                optimizer,
                pool,
                pool.names,
                max_steps=self.max_steps,
                batch_size=self.batch_size,
                seed=self.seed,
                desc="WEMoE test-time adaptation",
            )
        for moe in moes.values():
            moe.batch_reduce = False  # evaluation routes every sample on its own
        model.eval()

        self._routers = {
            f"{n}.router.{k}": v.detach().cpu().clone()
            for n, moe in moes.items()
            for k, v in moe.router.state_dict().items()
        }
        total = _num_params(model)
        tv_entries = sum(p.numel() for moe in moes.values() for p in moe.task_vectors.values())
        tv_nonzeros = sum(moe.num_task_vector_nonzeros() for moe in moes.values())
        router_params = sum(_num_params(moe.router) for moe in moes.values())
        # The MoE modules keep the pretrained MLPs: they add only task vectors and routers.
        params_pretrained = total - tv_entries - router_params
        self._report = {
            "params_pretrained": params_pretrained,
            "params_upscaled": total,
            "params_ratio": total / params_pretrained,
            "params_trainable": router_params,
            "moe_modules": len(moes),
            "task_vector_entries": tv_entries,
            "task_vector_nonzeros": tv_nonzeros,
            "params_upscaled_sparse": total - tv_entries + tv_nonzeros,
            "tta_steps": len(history),
            "tta_loss_first": history[0] if history else None,
            "tta_loss_last": history[-1] if history else None,
        }
        return model

    def extra_report(self) -> dict[str, Any]:
        """Parameter counts (total with the frozen task vectors, vs pretrained) and TTA losses."""
        return dict(self._report)

    def artifacts(self) -> dict[str, torch.Tensor]:
        """The trained routers' weights, keyed ``<mlp name>.router.<param>``."""
        return dict(self._routers)
