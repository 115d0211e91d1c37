"""RegMean: merge every linear layer by the closed-form regression onto the experts' outputs."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.average import weighted_sum
from fusion_bench.merging.regmean import regmean_solve, regmean_terms
from fusion_bench.method._activations import GramCollector, TaskLogits, param_key, task_examples
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class RegMean(BaseMethod):
    """Regression Mean.

    Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", arXiv
    2212.09849. For every linear layer (``pool.linear_names(model)``)::

        W^T = (sum_i G_i)^{-1} sum_i G_i W_i^T,   G_i = alpha X_i^T X_i + (1 - alpha) diag(X_i^T X_i)

    ``X_i`` are the layer's inputs in expert ``i`` on ``num_regmean_examples`` examples of task
    ``i``'s train split (forward hooks; tokens are rows), ``alpha = reduce_non_diagonal_ratio``.
    The Gram matrices are averaged over rows (as in the authors' code: each task weighs the
    same). Biases and all other parameters get the plain average; a linear layer that never
    sees an input (e.g. ``nn.MultiheadAttention.out_proj``, whose weight is read directly) is
    averaged too, with a warning. A singular system falls back to the least-squares solution.

    Experts are streamed: the sums ``sum_i G_i``, ``sum_i G_i W_i^T``, the running average and
    one expert are in memory; no pretrained model is needed.

    Args:
        num_regmean_examples: examples per task (a seeded random subset of its train split).
        reduce_non_diagonal_ratio: ``alpha`` in [0, 1] (1: plain RegMean; 0: diagonal).
        batch_size: examples per forward pass.
        seed: seed of the example subsets.
    """

    def __init__(
        self,
        num_regmean_examples: int = 256,
        reduce_non_diagonal_ratio: float = 0.95,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if int(num_regmean_examples) < 1 or int(batch_size) < 1:
            raise FusionBenchError(
                f"{type(self).__name__}: num_regmean_examples and batch_size must be >= 1, got "
                f"{num_regmean_examples} and {batch_size}"
            )
        if not 0.0 <= float(reduce_non_diagonal_ratio) <= 1.0:
            raise FusionBenchError(
                f"{type(self).__name__}: reduce_non_diagonal_ratio must be in [0, 1], got "
                f"{reduce_non_diagonal_ratio}"
            )
        self.num_regmean_examples = int(num_regmean_examples)
        self.reduce_non_diagonal_ratio = float(reduce_non_diagonal_ratio)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._report: dict[str, Any] = {}

    # -- shared with RegMean++ ---------------------------------------------------------------
    def examples(self, pool: BaseModelPool, task: str) -> list[torch.Tensor]:
        """The input batches of ``task`` used for its Gram matrices (CPU)."""
        return task_examples(pool, task, self.num_regmean_examples, self.batch_size, self.seed)

    @staticmethod
    def collect_grams(
        collector: GramCollector,
        forward: Any,
        batches: list[torch.Tensor],
        fabric: Fabric,
    ) -> dict[str, torch.Tensor]:
        """Run ``forward(x)`` on every batch under ``collector``; return its Gram matrices."""
        with collector, fabric.autocast():
            for x in batches:
                collector.forward(forward, fabric.to_device(x))
        return collector.grams()

    def warn_unused(self, unused: list[str]) -> None:
        if unused:
            warnings.warn(
                f"{type(self).__name__}: {len(unused)} linear layer(s) never received an input "
                f"(e.g. '{unused[0]}'); they are averaged instead",
                RuntimeWarning,
                stacklevel=3,
            )
        self._report["averaged_linear_layers"] = len(unused)

    # -- RegMean ------------------------------------------------------------------------------
    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the first expert's architecture holding the RegMean merge."""
        names = pool.names
        if not names:
            raise FusionBenchError(f"{type(self).__name__} needs at least one expert in the pool")
        fabric = self.get_fabric()
        self._report = {}
        gram_sum: dict[str, torch.Tensor] = {}
        gram_weight_sum: dict[str, torch.Tensor] = {}
        seen: dict[str, int] = {}
        holder: dict[str, nn.Module] = {}
        linears: list[str] = []

        def experts() -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
            from tqdm.auto import tqdm

            for name in tqdm(names, desc="RegMean", unit="model", leave=False):
                holder.pop("model", None)  # free the previous expert before loading the next
                model = fabric.to_device(pool.load_model(name))
                if not linears:
                    linears.extend(pool.linear_names(model))
                grams = self.collect_grams(
                    GramCollector(model, linears),
                    TaskLogits(pool, model, name, activations=True),
                    self.examples(pool, name),
                    fabric,
                )
                for layer, gram in grams.items():
                    weight = model.get_submodule(layer).weight
                    g, gw = regmean_terms(weight, gram, self.reduce_non_diagonal_ratio, layer)
                    if layer in gram_sum:
                        gram_sum[layer].add_(g)
                        gram_weight_sum[layer].add_(gw)
                    else:
                        gram_sum[layer], gram_weight_sum[layer] = g, gw
                    seen[layer] = seen.get(layer, 0) + 1
                del grams
                holder["model"] = model
                yield name, model.state_dict()

        with torch.no_grad():
            # the plain average of everything; the linear weights are then replaced below
            merged = weighted_sum(experts(), [1.0 / len(names)] * len(names))
            solved = [layer for layer in linears if seen.get(layer, 0) == len(names)]
            self.warn_unused([layer for layer in linears if layer not in solved])
            for layer in solved:
                key = param_key(layer, "weight")
                w = regmean_solve(gram_sum.pop(layer), gram_weight_sum.pop(layer), layer)
                merged[key] = w.to(device=merged[key].device, dtype=merged[key].dtype)
            self._report["regmean_layers"] = len(solved)
            model = holder.pop("model")
            model.load_state_dict(merged)
        return model

    def extra_report(self) -> dict[str, Any]:
        """Number of linear layers merged by RegMean and of those averaged instead."""
        return dict(self._report)
