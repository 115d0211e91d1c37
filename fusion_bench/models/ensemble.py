"""Output-space ensembles of models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError


def average_outputs(outputs: Sequence[Any]) -> Any:
    """Element-wise mean of a list of model outputs of the same structure.

    Floating-point tensors are averaged; tuples, lists and mappings (including Hugging Face
    ``ModelOutput``) are averaged field by field and rebuilt with their own type; ``None``
    fields stay ``None``.

    Raises:
        FusionBenchError: for integer tensors (e.g. predicted labels), whose mean is not a
            prediction, or for other output types.
    """
    first = outputs[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        if not first.is_floating_point():
            raise FusionBenchError(
                f"cannot average ensemble outputs of dtype {first.dtype}: members must return "
                "floating-point tensors (e.g. logits)"
            )
        return torch.stack(list(outputs)).mean(dim=0)
    if isinstance(first, Mapping):
        fields = {k: average_outputs([o[k] for o in outputs]) for k in first}
        return dict(fields) if type(first) is dict else type(first)(**fields)
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # namedtuple
        return type(first)(*(average_outputs(list(xs)) for xs in zip(*outputs, strict=True)))
    if isinstance(first, (tuple, list)):
        return type(first)(average_outputs(list(xs)) for xs in zip(*outputs, strict=True))
    raise FusionBenchError(f"cannot average ensemble outputs of type {type(first).__name__}")


class EnsembleModel(nn.Module):
    """Holds several models and averages their outputs.

    ``forward(*args, **kwargs)`` runs every member on the same inputs and returns the
    element-wise mean of their outputs (:func:`average_outputs`). Averaging raw outputs is not
    always the right ensemble: a consumer that must average something computed *from* the
    outputs (e.g. a CLIP task pool averaging zero-shot logits computed from each member's image
    embeddings) should detect ``isinstance(model, EnsembleModel)`` and iterate over
    :attr:`members` itself.

    Attributes:
        members: the ensembled models (an ``nn.ModuleList``), so ``.to()``, ``.eval()`` and
            ``state_dict()`` reach every member.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) == 0:
            raise FusionBenchError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Mean of ``member(*args, **kwargs)`` over the members."""
        return average_outputs([member(*args, **kwargs) for member in self.members])
