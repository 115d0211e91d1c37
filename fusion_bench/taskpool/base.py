"""Base task pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    import torch
    from lightning.fabric import Fabric
    from torch import nn


class BaseTaskPool:
    """A set of evaluation tasks.

    ``evaluate`` receives a model — or a mapping ``task -> model`` when each task is to be
    evaluated with its own model — and returns ``{task: {metric: value}}``. Subclasses implement
    :meth:`prepare` (open everything a run needs, so bad locations fail before a long fusion)
    and :meth:`evaluate_task`.
    """

    @property
    def task_names(self) -> list[str]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Per-task metadata (at least ``version``) written into every report."""
        return {}

    def prepare(self) -> None:
        """Load what evaluation needs (tokenizers, heads, datasets). Default: nothing."""

    def evaluate_task(
        self, name: str, model: nn.Module, device: torch.device, fabric: Fabric | None
    ) -> dict[str, float]:
        """Metrics of ``model`` on task ``name`` (the model is moved to ``device`` here)."""
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module | Mapping[str, nn.Module], *, fabric: Fabric | None = None
    ) -> dict[str, dict[str, float]]:
        """Evaluate ``model`` (or ``task -> model``) on every task.

        Args:
            model: the model, or a mapping ``task -> model`` evaluating each task with its own.
            fabric: when given, its device and autocast precision are used; otherwise CPU.

        Raises:
            FusionBenchError: a task missing from a model mapping, or a data/location problem.
        """
        import torch

        if isinstance(model, Mapping):
            missing = [n for n in self.task_names if n not in model]
            if missing:
                raise FusionBenchError(
                    f"no model for task(s) {', '.join(missing)} in the per-task model mapping "
                    f"(it has: {', '.join(map(str, model))})"
                )
        device = torch.device(fabric.device) if fabric is not None else torch.device("cpu")
        self.prepare()
        results = {}
        for name in self.task_names:
            if not isinstance(model, Mapping):
                results[name] = self.evaluate_task(name, model, device, fabric)
                continue
            # Per-task experts go back where they were, so that eight of them do not pile up on
            # the accelerator one task after another.
            task_model = model[name]
            home = next(iter(task_model.parameters()), torch.empty(0)).device
            results[name] = self.evaluate_task(name, task_model, device, fabric)
            task_model.to(home)
        return results
