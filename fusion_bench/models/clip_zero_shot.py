"""Zero-shot classification with a CLIP model: text heads and image logits.

Shared by the CLIP task pool (evaluation) and the tiny-benchmark builder (frozen heads for
fine-tuning), so both compute exactly the same thing.

Following Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision" (arXiv 2103.00020): the head of class ``c`` is the mean over templates of the
L2-normalised text embeddings of ``template.format(c)``, normalised again; logits are
``exp(logit_scale) * <normalise(image embedding), head_c>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def zero_shot_head(
    clip_model: nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Text classification head of shape ``[num_classes, embed_dim]``, rows of unit norm.

    Args:
        clip_model: a ``transformers.CLIPModel`` (uses ``text_model`` and ``text_projection``).
        tokenizer: the model's tokenizer (callable returning ``input_ids`` / ``attention_mask``).
        classnames: class names in label order.
        templates: format strings with one ``{}`` for the class name.
        device: where to compute (defaults to the model's device).
    """
    device = device or next(clip_model.parameters()).device
    heads = []
    for name in classnames:
        texts = [t.format(name) for t in templates]
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        pooled = clip_model.text_model(**tok).pooler_output
        emb = F.normalize(clip_model.text_projection(pooled), dim=-1)
        heads.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(heads)


def image_embeddings(
    clip_model: nn.Module, vision_model: nn.Module, pixel_values: torch.Tensor
) -> torch.Tensor:
    """L2-normalised image embeddings of ``vision_model`` projected by ``clip_model``'s head."""
    pooled = vision_model(pixel_values=pixel_values).pooler_output
    return F.normalize(clip_model.visual_projection(pooled), dim=-1)


def zero_shot_logits(
    clip_model: nn.Module,
    vision_model: nn.Module,
    pixel_values: torch.Tensor,
    head: torch.Tensor,
) -> torch.Tensor:
    """Class logits ``exp(logit_scale) * image_emb @ head.T`` of shape ``[batch, classes]``."""
    emb = image_embeddings(clip_model, vision_model, pixel_values)
    return clip_model.logit_scale.exp() * emb @ head.to(emb.dtype).T


def image_transform(image_processor):
    """A torchvision transform equivalent to a ``CLIPImageProcessor``'s preprocessing.

    Resize the shortest edge (bicubic), centre-crop, convert to RGB tensor, normalise. Being a
    plain per-image callable, it runs inside DataLoader workers (the HF processor is slower and
    works on batches of PIL images).
    """
    from torchvision import transforms as T

    # transformers 5 wraps sizes in a SizeDict whose unset fields are None; dict() drops them.
    size = {k: v for k, v in dict(image_processor.size).items() if v is not None}
    shortest = size.get("shortest_edge") or min(size.get("height", 224), size.get("width", 224))
    crop = image_processor.crop_size
    crop = {k: v for k, v in dict(crop).items() if v is not None} if crop is not None else {}
    crop_hw = (crop.get("height", shortest), crop.get("width", shortest))
    return T.Compose(
        [
            T.Lambda(lambda im: im.convert("RGB")),
            T.Resize(shortest, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(crop_hw),
            T.ToTensor(),
            T.Normalize(image_processor.image_mean, image_processor.image_std),
        ]
    )
