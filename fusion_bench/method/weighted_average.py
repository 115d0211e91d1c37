"""Weighted average of the experts' weights."""

from __future__ import annotations

from collections.abc import Sequence

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.average import normalize_weights
from fusion_bench.method.simple_average import SimpleAverage


class WeightedAverage(SimpleAverage):
    """Weighted average of the experts' weights: ``theta = sum_i w_i theta_i``.

    With ``normalize`` the weights are divided by their sum first, so
    ``theta = sum_i w_i theta_i / sum_j w_j``. Streams the experts like
    :class:`~fusion_bench.method.simple_average.SimpleAverage`.

    Args:
        weights: one weight per expert, in the pool's order; ``None`` gives equal weights
            (the simple average).
        normalize: divide the weights by their sum.
    """

    def __init__(self, weights: Sequence[float] | None = None, normalize: bool = True) -> None:
        self.weights = None if weights is None else [float(w) for w in weights]
        self.normalize = normalize

    def expert_weights(self, n: int) -> list[float]:
        """The configured weights (checked against ``n`` experts), normalized if asked."""
        if self.weights is None:
            return super().expert_weights(n)
        if len(self.weights) != n:
            raise FusionBenchError(
                f"weighted_average got {len(self.weights)} weights for {n} experts: give one "
                "weight per expert, in the pool's order (method.weights=[...])"
            )
        return normalize_weights(self.weights) if self.normalize else list(self.weights)
