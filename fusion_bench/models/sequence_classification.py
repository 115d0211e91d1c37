"""Decoder-only sequence classification (GPT-2 GLUE experts): a backbone plus a per-task head.

A ``GPT2ForSequenceClassification`` expert is a ``GPT2Model`` backbone and a linear ``score``
head applied to the hidden state of the last real (non-padding) token. Merging methods fuse the
backbones; each task keeps its own head. This module holds the pieces the GPT-2 model pool and
task pool share: reading a head out of an expert checkpoint, the last-token logits, and the
conversion between GPT-2's ``Conv1D`` (``y = x W + b`` with ``W: [in, out]``) and ``nn.Linear``
(``W: [out, in]``) — the pool presents backbones with ``nn.Linear`` layers so that every
layer-wise method (RegMean, SMILE, Twin-Merging) sees one module type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class ScoreHead:
    """The ``score`` layer of a sequence-classification expert."""

    weight: torch.Tensor
    """``[num_labels, hidden]``."""
    bias: torch.Tensor | None


def load_classifier(location: str, *, what: str, hint: str) -> nn.Module:
    """The ``GPT2ForSequenceClassification`` (or similar) checkpoint at ``location``.

    Raises:
        FusionBenchError: the checkpoint has no trained ``score`` head (``from_pretrained`` would
            silently initialise a random one, e.g. for a bare ``GPT2Model``).
    """
    from transformers import AutoModelForSequenceClassification

    from fusion_bench.errors import FusionBenchError
    from fusion_bench.utils.hub import load_with_fallback

    model, info = load_with_fallback(
        AutoModelForSequenceClassification.from_pretrained,
        location,
        what=what,
        hint=hint,
        output_loading_info=True,
    )
    if not hasattr(model, "score") or any(k.startswith("score.") for k in info["missing_keys"]):
        raise FusionBenchError(
            f"{what} ('{location}') has no trained classification head (score); give a "
            "GPT2ForSequenceClassification checkpoint"
        )
    return model


def load_score_head(location: str, *, what: str, hint: str) -> ScoreHead:
    """The classification head of the sequence-classification checkpoint at ``location``."""
    score = load_classifier(location, what=what, hint=hint).score
    bias = None if score.bias is None else score.bias.detach().clone()
    return ScoreHead(score.weight.detach().clone(), bias)


def last_token_logits(
    backbone: nn.Module, head: ScoreHead, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Logits ``[batch, num_labels]``: ``head`` on the hidden state of each row's last real token.

    Rows are right-padded (``attention_mask`` is 1 on a prefix), as
    ``GPT2ForSequenceClassification`` assumes when it pools the last non-padding token.
    """
    import torch
    import torch.nn.functional as F

    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    last = attention_mask.sum(dim=-1).clamp(min=1) - 1
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weight = head.weight.to(device=pooled.device, dtype=pooled.dtype)
    bias = None if head.bias is None else head.bias.to(device=pooled.device, dtype=pooled.dtype)
    return F.linear(pooled, weight, bias)


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every ``transformers`` ``Conv1D`` in ``model`` by the equivalent ``nn.Linear``."""
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            n_in, n_out = module.weight.shape
            linear = nn.Linear(n_in, n_out, bias=module.bias is not None)
            linear.to(device=module.weight.device, dtype=module.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            model.set_submodule(name, linear)
    return model


def linear_to_conv1d(model: nn.Module) -> nn.Module:
    """Inverse of :func:`conv1d_to_linear`: every ``nn.Linear`` becomes a ``Conv1D`` (for saving
    a GPT-2 backbone in its own format; GPT-2 has no ``nn.Linear`` of its own)."""
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            conv = Conv1D(module.out_features, module.in_features)
            conv.to(device=module.weight.device, dtype=module.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(module.weight.T)
                if module.bias is not None:
                    conv.bias.copy_(module.bias)
                else:
                    conv.bias.zero_()
            model.set_submodule(name, conv)
    return model
