"""Simple ensemble: average the experts' outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.ensemble import EnsembleModel

if TYPE_CHECKING:
    from fusion_bench.modelpool.base import BaseModelPool


class SimpleEnsemble(BaseMethod):
    """Output-space ensemble of the experts: ``f(x) = (1/N) sum_i f_i(x)``.

    Not a weight merge: all N experts stay in memory and each input runs through all of them.
    Returns an :class:`~fusion_bench.models.ensemble.EnsembleModel` whose ``members`` are the
    experts; task pools that average logits (rather than raw outputs) use ``members`` directly.
    """

    def run(self, pool: BaseModelPool) -> EnsembleModel:
        """Load every expert and wrap them in an :class:`EnsembleModel`."""
        if len(pool) == 0:
            raise FusionBenchError("simple_ensemble needs at least one expert in the pool")
        return EnsembleModel([model for _, model in pool.iter_models(desc="SimpleEnsemble")])
