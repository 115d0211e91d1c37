"""Individual experts: evaluate every expert on its own task (the "Fine-tuned (STL)" row)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class ExpertModels(Mapping[str, "nn.Module"]):
    """A lazy read-only mapping ``task name -> expert model``.

    Nothing is loaded until a model is looked up, and every lookup loads a fresh copy from the
    pool (nothing is cached), so a task pool evaluating task by task holds one expert at a time.
    Iteration yields the experts' names in pool order.
    """

    def __init__(self, pool: BaseModelPool) -> None:
        self._pool = pool
        self._names = list(pool.names)

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self._names:
            raise KeyError(name)
        return self._pool.load_model(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        # Override Mapping's default, which would load the model to answer.
        return name in self._names

    def __repr__(self) -> str:
        return f"ExpertModels({self._names})"


class Individual(BaseMethod):
    """No fusion: each expert is evaluated on its own task.

    ``run`` returns an :class:`ExpertModels` mapping (lazy: models load on lookup), which task
    pools evaluate task by task with the matching expert.
    """

    def run(self, pool: BaseModelPool) -> ExpertModels:
        """Return the lazy mapping ``task name -> expert``."""
        return ExpertModels(pool)
