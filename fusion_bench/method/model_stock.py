"""Model Stock: interpolate between the experts' average and the pretrained model, per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.model_stock import model_stock_merge
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class ModelStock(BaseMethod):
    """Model Stock, per layer: ``w_H = t * w_avg + (1 - t) * w_0``.

    Jang et al., "Model Stock: All we need is just a few fine-tuned models", arXiv 2403.19522.
    For each state-dict key, ``t = N cos(theta) / (1 + (N - 1) cos(theta))`` where
    ``cos(theta)`` is the mean pairwise cosine between the experts' task vectors
    ``w_i - w_0`` of that key (clamped to [0, 1]: a layer whose task vectors are negatively
    correlated keeps its pretrained weights), ``w_avg`` the experts' average and ``w_0`` the
    pretrained weights. Needs at least 2 experts. Experts are streamed (see
    :func:`fusion_bench.merging.model_stock.model_stock_merge`). Takes no hyperparameters.
    """

    def __init__(self) -> None:
        self.ratios: dict[str, float] = {}

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the pretrained model holding the Model Stock merge."""
        if len(pool) < 2:
            raise FusionBenchError(
                f"model_stock needs at least 2 experts in the pool, got {len(pool)}"
            )
        with torch.no_grad():
            model = pool.load_pretrained()
            merged, self.ratios = model_stock_merge(
                model.state_dict(), iter_state_dicts(pool, desc="ModelStock")
            )
            model.load_state_dict(merged)
        return model

    def extra_report(self) -> dict[str, Any]:
        """Summary of the per-layer interpolation ratios ``t`` of the last run."""
        if not self.ratios:
            return {}
        values = list(self.ratios.values())
        return {
            "ratio_mean": sum(values) / len(values),
            "ratio_min": min(values),
            "ratio_max": max(values),
            "layers_at_pretrained": sum(v == 0.0 for v in values),
        }
