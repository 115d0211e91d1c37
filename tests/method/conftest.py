"""Fixtures for method tests: an in-memory model pool of tiny models."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pytest
import torch
from torch import nn

from fusion_bench.constants import PRETRAINED
from fusion_bench.modelpool.base import BaseModelPool


class InMemoryModelPool(BaseModelPool):
    """A model pool over modules held in memory; every load returns a deep copy.

    Counts loads per name in :attr:`loads`, so tests can check laziness and streaming.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__({name: f"memory://{name}" for name in modules})
        self._modules = dict(modules)
        self.loads: dict[str, int] = dict.fromkeys(modules, 0)

    def _load(self, name: str, location: str) -> nn.Module:
        self.loads[name] += 1
        return copy.deepcopy(self._modules[name])


def tiny_model(seed: int) -> nn.Module:
    """A tiny MLP with a BatchNorm, whose ``num_batches_tracked`` is an integer buffer."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        model[1].running_mean.normal_()
        model[1].num_batches_tracked.fill_(seed)
    return model.eval()


MakePool = Callable[..., InMemoryModelPool]


@pytest.fixture
def make_pool() -> MakePool:
    """Factory: ``make_pool(n_experts=3, pretrained=True, extra=None)`` -> pool of tiny models.

    The pretrained model has seed 100 (so ``num_batches_tracked == 100``); expert ``task{i}``
    has seed ``i`` (``num_batches_tracked == i``); ``extra`` adds or replaces models by name.
    """

    def make(
        n_experts: int = 3, pretrained: bool = True, extra: Mapping[str, nn.Module] | None = None
    ) -> InMemoryModelPool:
        modules: dict[str, nn.Module] = {}
        if pretrained:
            modules[PRETRAINED] = tiny_model(100)
        for i in range(n_experts):
            modules[f"task{i}"] = tiny_model(i)
        modules.update(extra or {})
        return InMemoryModelPool(modules)

    return make


@pytest.fixture
def pool(make_pool: MakePool) -> InMemoryModelPool:
    """A pool with a pretrained model and three experts."""
    return make_pool()


def state_dicts(pool: InMemoryModelPool) -> dict[str, dict[str, torch.Tensor]]:
    """All state dicts of ``pool`` (for closed-form references in tests)."""
    return {name: pool._modules[name].state_dict() for name in pool.models}


@pytest.fixture
def sds() -> Callable[[InMemoryModelPool], dict[str, dict[str, torch.Tensor]]]:
    """``sds(pool)`` -> ``{name: state_dict}`` of every model of the pool."""
    return state_dicts
