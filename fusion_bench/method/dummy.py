"""Dummy method: return one model of the pool unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fusion_bench.constants import PRETRAINED
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class Dummy(BaseMethod):
    """Evaluate the pretrained model (the "Pre-trained" row) or one expert, without fusion.

    Args:
        model_name: name of the pool's model to return; ``_pretrained_`` by default.
    """

    def __init__(self, model_name: str = PRETRAINED) -> None:
        self.model_name = model_name

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return ``pool.load_model(model_name)`` unchanged."""
        return pool.load_model(self.model_name)
