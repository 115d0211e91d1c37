"""Base class of fusion methods."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from lightning.fabric import Fabric
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool


class BaseMethod:
    """A fusion algorithm.

    Subclasses take their hyperparameters as typed constructor arguments whose names match the
    YAML keys one to one, and implement :meth:`run`. ``run`` sees only the model pool: it does no
    evaluation and no file I/O (saving is the program's job).

    ``fabric`` is set by the program before ``run`` (device, precision, loggers); data-free
    methods may ignore it.
    """

    fabric: Fabric | None = None

    def run(self, pool: BaseModelPool) -> nn.Module | dict[str, nn.Module]:
        """Fuse the models of ``pool``.

        Returns:
            The fused model, or a mapping ``task name -> model`` when each task is evaluated with
            its own model (e.g. every expert on its own task).
        """
        raise NotImplementedError

    def extra_report(self) -> dict[str, Any]:
        """Method-specific facts for the report (e.g. parameter counts). Empty by default."""
        return {}

    def artifacts(self) -> dict[str, torch.Tensor]:
        """Learned tensors worth keeping (e.g. AdaMerging coefficients), saved by the program as
        ``method_artifacts.safetensors`` in the run's output dir. Empty by default."""
        return {}

    def get_fabric(self) -> Fabric:
        """The program's Fabric, or a single-process CPU Fabric when run outside the program."""
        if self.fabric is None:
            from lightning.fabric import Fabric

            self.fabric = Fabric(accelerator="cpu", devices=1)
        return self.fabric
