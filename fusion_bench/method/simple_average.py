"""Simple average of the experts' weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.average import weighted_sum
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class SimpleAverage(BaseMethod):
    """Average the experts' weights: ``theta = (1/N) sum_i theta_i``.

    The "weight averaging" baseline of model soups (Wortsman et al., "Model soups: averaging
    weights of multiple fine-tuned models improves accuracy without increasing inference time",
    arXiv 2203.05482). Needs no pretrained model. Experts are accumulated one at a time (the
    result + the running sum + the current expert in memory); integer buffers come from the
    first expert.

    Subclasses change only :meth:`expert_weights` (see
    :class:`~fusion_bench.method.weighted_average.WeightedAverage`).
    """

    def expert_weights(self, n: int) -> list[float]:
        """Per-expert weights for ``n`` experts: ``1/n`` each."""
        return [1.0 / n] * n

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the first expert's architecture holding ``sum_i w_i theta_i``."""
        names = pool.names
        if not names:
            raise FusionBenchError(f"{type(self).__name__} needs at least one expert in the pool")
        weights = self.expert_weights(len(names))
        with torch.no_grad():
            # The first expert is both the first summand and the module the result is loaded
            # into, so it is loaded once (its state dict shares the module's storage).
            model = pool.load_model(names[0])

            def state_dicts():
                yield names[0], model.state_dict()
                yield from iter_state_dicts(pool, names[1:], desc=type(self).__name__)

            merged = weighted_sum(state_dicts(), weights)
            model.load_state_dict(merged)
        return model
