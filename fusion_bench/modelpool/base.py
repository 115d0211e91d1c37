"""Base model pool: names -> locations, lazy loading, validation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    import torch
    from torch import nn


class BaseModelPool:
    """A pretrained model plus fine-tuned experts, loaded lazily by name.

    Args:
        models: mapping ``name -> location`` (hub id, local path or ``tiny://`` path). The name
            ``_pretrained_`` denotes the base model; every other name is an expert (usually the
            task it was fine-tuned on).
        validate: check before any work that all models share keys, shapes and dtypes and hold
            finite values.

    Subclasses implement :meth:`_load` (location -> ``nn.Module``) and :meth:`save_model`.
    """

    def __init__(self, models: Mapping[str, str], validate: bool = True) -> None:
        if not models:
            raise FusionBenchError(
                "the model pool is empty: give at least one entry in modelpool.models"
            )
        self.models: dict[str, str] = {str(k): str(v) for k, v in models.items()}
        self.validate_models = validate

    # -- names -------------------------------------------------------------------------------
    @property
    def has_pretrained(self) -> bool:
        return PRETRAINED in self.models

    @property
    def names(self) -> list[str]:
        """Expert names (every model but ``_pretrained_``), in config order."""
        return [n for n in self.models if n != PRETRAINED]

    def __len__(self) -> int:
        return len(self.names)

    def location(self, name: str) -> str:
        try:
            return self.models[name]
        except KeyError:
            raise FusionBenchError(
                f"model pool has no model '{name}'; available: {', '.join(self.models)}"
            ) from None

    # -- loading -----------------------------------------------------------------------------
    def _load(self, name: str, location: str) -> nn.Module:
        raise NotImplementedError

    def load_model(self, name: str) -> nn.Module:
        """Load model ``name`` (a fresh copy on every call), in eval mode."""
        model = self._load(name, self.location(name))
        return model.eval()

    def load_pretrained(self) -> nn.Module:
        if not self.has_pretrained:
            raise FusionBenchError(
                "this method needs a pretrained model: add modelpool.models._pretrained_=<location>"
            )
        return self.load_model(PRETRAINED)

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """State dict of model ``name`` (loads the model; subclasses may stream instead)."""
        return self.load_model(name).state_dict()

    def iter_models(
        self, names: list[str] | None = None, desc: str = "loading"
    ) -> Iterator[tuple[str, nn.Module]]:
        """Yield ``(name, model)`` one at a time so callers can free each before the next."""
        from tqdm.auto import tqdm

        names = self.names if names is None else names
        for name in tqdm(names, desc=desc, unit="model", leave=False):
            yield name, self.load_model(name)

    def save_model(self, model: nn.Module, path: str) -> None:
        """Save a fused model to ``path`` (``save_pretrained`` format where available)."""
        raise NotImplementedError

    # -- data and task outputs for data-dependent methods --------------------------------------
    def task_dataset(self, task: str, split: str = "train"):
        """A torch ``Dataset`` of ``(inputs, label)`` for ``task``.

        Args:
            task: task name (usually an expert's name).
            split: role of the data: ``"train"``, ``"validation"`` or ``"test"`` (unlabelled use,
                e.g. test-time adaptation, must ignore the labels).

        Raises:
            FusionBenchError: this pool has no data for ``task``.
        """
        raise FusionBenchError(
            f"{type(self).__name__} has no data: this method needs task data; add "
            "modelpool.tasks.<task>.dataset=<location> entries to the model pool config"
        )

    def task_logits(self, model: nn.Module, task: str, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, classes]`` of ``model`` (a backbone of this pool) on ``task``."""
        raise FusionBenchError(
            f"{type(self).__name__} cannot compute task outputs: this method needs a pool with "
            "task heads"
        )

    def activation_forward(self, model: nn.Module, task: str, inputs: torch.Tensor) -> Any:
        """The forward pass whose layer inputs are a task's activation statistics (RegMean's
        Gram matrices). Default: :meth:`task_logits`; sequence models override it to run the
        whole target sequence (teacher forcing) when ``inputs`` carry it."""
        return self.task_logits(model, task, inputs)

    def backbone_call(self, model: Callable[..., Any], inputs: Any) -> Any:
        """Run a backbone of this pool (or a callable taking its arguments) on a batch of
        :meth:`task_dataset` inputs. Default: keyword arguments for a mapping, else the
        tensor as the one positional argument (``pixel_values``)."""
        return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)

    def mlp_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the Transformer MLP blocks of ``model`` (for MoE upscaling)."""
        raise FusionBenchError(
            f"{type(self).__name__} does not declare its MLP blocks; this method cannot use it"
        )

    def linear_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the ``nn.Linear`` layers of ``model`` that merging may treat
        layer by layer (RegMean, SMILE). Default: every ``nn.Linear``."""
        from torch import nn

        return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]

    def embedding_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the ``nn.Embedding`` layers of ``model`` that are called on
        per-sample inputs (``[batch, ...]``), which per-input routing (Twin-Merging) may route.
        Default: every ``nn.Embedding``."""
        from torch import nn

        return [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Check all models against the first: same keys, shapes, dtypes; finite values.

        Raises:
            FusionBenchError: naming the model and the first offending key.
        """
        from fusion_bench.merging.state_dict import check_compatible

        ref_name = PRETRAINED if self.has_pretrained else self.names[0]
        ref = self.load_state_dict(ref_name)
        check_compatible(ref, ref_name, ref, ref_name)
        for name in self.names:
            if name == ref_name:
                continue
            check_compatible(ref, ref_name, self.load_state_dict(name), name)
