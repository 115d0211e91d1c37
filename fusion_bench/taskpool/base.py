"""Base task pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from torch import nn


class BaseTaskPool:
    """A set of evaluation tasks.

    ``evaluate`` receives a model — or a mapping ``task -> model`` when each task is to be
    evaluated with its own model — and returns ``{task: {metric: value}}``.
    """

    @property
    def task_names(self) -> list[str]:
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module | Mapping[str, nn.Module], *, fabric: Fabric | None = None
    ) -> dict[str, dict[str, float]]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Per-task metadata (at least ``version``) written into every report."""
        return {}
