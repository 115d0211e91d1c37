"""The text side of a CLIP, per model library: what turns a vision tower into a classifier.

A zero-shot classifier needs, besides the vision tower under evaluation, the text tower and
tokenizer (class heads), the image transform, and what maps the tower's output into the joint
embedding space (projection, logit scale). Hugging Face ``CLIPModel`` and open_clip ``CLIP``
split these differently: HF's ``CLIPVisionModel`` stops before ``visual_projection`` (which stays
with the text side here), open_clip's ``visual`` ends with its own ``proj``. Each class below
hides one library behind the same five members: ``transform``, ``fingerprint()``,
``head(...)``, ``logits(...)``, ``to(device)`` (Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", arXiv 2103.00020, for the maths).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


class _TextTower:
    """What both libraries' text sides share: lazy loading state, the transform, device moves.
    Subclasses implement ``load() -> (clip without vision tower, tokenizer)`` (setting
    ``_transform``), ``description``, ``fingerprint``, ``head`` and ``logits``."""

    library = ""

    def __init__(self, hint: str) -> None:
        self.hint = hint
        self._clip: nn.Module | None = None
        self._tokenizer = None
        self._transform = None

    def load(self) -> tuple[nn.Module, Any]:
        raise NotImplementedError

    @property
    def transform(self):
        """The image transform of this CLIP (loads it on first use)."""
        self.load()
        return self._transform

    def to(self, device) -> _TextTower:
        """Move the text-side modules (projection, logit scale) to ``device``."""
        self.load()[0].to(device)
        return self


class HFTextTower(_TextTower):
    """The text side of a ``transformers.CLIPModel`` (its vision tower is dropped on load).

    Args:
        location: hub id, ``save_pretrained`` dir or ``tiny://`` location of the full CLIP; its
            tokenizer and image processor are read from the same place.
        hint: the override pointing at a local copy, for error messages.
    """

    library = "transformers"

    def __init__(self, location: str, *, hint: str) -> None:
        super().__init__(hint)
        self.location = str(location)

    @property
    def description(self) -> str:
        return self.location

    def load(self) -> tuple[nn.Module, Any]:
        """The CLIP model (without its vision tower) and tokenizer, loaded once."""
        if self._clip is None:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            from fusion_bench.models.clip_zero_shot import image_transform
            from fusion_bench.utils.hub import load_with_fallback

            kw = {"what": "CLIP model", "hint": self.hint}
            clip = load_with_fallback(CLIPModel.from_pretrained, self.location, **kw)
            self._tokenizer = load_with_fallback(AutoTokenizer.from_pretrained, self.location, **kw)
            processor = load_with_fallback(AutoImageProcessor.from_pretrained, self.location, **kw)
            self._transform = image_transform(processor)
            # The vision tower under evaluation replaces CLIP's own, so drop it instead of
            # holding (and moving to the device) a second one.
            del clip.vision_model
            self._clip = clip.eval().requires_grad_(False)
        return self._clip, self._tokenizer

    def fingerprint(self) -> str:
        from fusion_bench.zero_shot.head_cache import text_tower_fingerprint

        return text_tower_fingerprint(*self.load())

    def head(
        self, classnames: Sequence[str], templates: Sequence[str], device=None
    ) -> torch.Tensor:
        from fusion_bench.models.clip_zero_shot import zero_shot_head

        clip, tokenizer = self.load()
        return zero_shot_head(clip, tokenizer, classnames, templates, device=device)

    def logits(
        self, vision: nn.Module, pixel_values: torch.Tensor, head: torch.Tensor
    ) -> torch.Tensor:
        from fusion_bench.models.clip_zero_shot import zero_shot_logits

        return zero_shot_logits(self.load()[0], vision, pixel_values, head)


class OpenCLIPTextTower(_TextTower):
    """The text side of an open_clip ``CLIP`` (its ``visual`` is dropped on load).

    Args:
        arch: open_clip architecture name (``ViT-B-32``).
        pretrained: pretrained tag (``openai``) or checkpoint file of the whole CLIP.
        hint: the override pointing at a local copy, for error messages.
        tokenizer: a Hugging Face tokenizer location to use through open_clip's ``HFTokenizer``
            (custom architectures); ``None``: ``open_clip.get_tokenizer(arch)``.
        model_config: an architecture JSON to register first (custom architectures).
    """

    library = "open_clip"

    def __init__(
        self,
        arch: str,
        pretrained: str,
        *,
        hint: str,
        tokenizer: str | None = None,
        model_config: str | None = None,
    ) -> None:
        super().__init__(hint)
        self.arch = str(arch)
        self.pretrained = str(pretrained)
        self.tokenizer_location = tokenizer
        self.model_config = model_config

    @property
    def description(self) -> str:
        return f"open_clip {self.arch} ({self.pretrained})"

    def load(self) -> tuple[nn.Module, Any]:
        """The open_clip CLIP (without ``visual``) and its tokenizer, loaded once."""
        if self._clip is None:
            import open_clip

            from fusion_bench.models.openclip import create_clip

            clip, self._transform = create_clip(
                self.arch, self.pretrained, hint=self.hint, model_config=self.model_config
            )
            if self.tokenizer_location is None:
                self._tokenizer = open_clip.get_tokenizer(self.arch)
            else:
                from fusion_bench.utils.hub import resolve_location

                path, _ = resolve_location(self.tokenizer_location)
                self._tokenizer = open_clip.tokenizer.HFTokenizer(
                    path, context_length=clip.context_length
                )
            del clip.visual
            self._clip = clip.requires_grad_(False)
        return self._clip, self._tokenizer

    def fingerprint(self) -> str:
        """sha256 over the text-side weights, the architecture and the tokenizer."""
        from fusion_bench.zero_shot.head_cache import hash_tensors

        clip, tokenizer = self.load()
        h = hashlib.sha256()
        hash_tensors(h, "open_clip.", clip)
        h.update(json.dumps([self.arch, type(tokenizer).__name__]).encode())
        inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers one
        vocab = inner.get_vocab() if hasattr(inner, "get_vocab") else {}
        h.update(json.dumps(sorted(vocab.items())).encode())
        h.update(str(getattr(tokenizer, "context_length", "")).encode())
        return h.hexdigest()

    def head(
        self, classnames: Sequence[str], templates: Sequence[str], device=None
    ) -> torch.Tensor:
        """Same head as :func:`fusion_bench.models.clip_zero_shot.zero_shot_head`, computed by
        open_clip's ``encode_text``."""
        import torch
        import torch.nn.functional as F

        clip, tokenizer = self.load()
        device = device or next(clip.parameters()).device
        rows = []
        with torch.inference_mode():
            for name in classnames:
                tokens = tokenizer([t.format(name) for t in templates]).to(device)
                emb = F.normalize(clip.encode_text(tokens), dim=-1)
                rows.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(rows)

    def logits(
        self, vision: nn.Module, pixel_values: torch.Tensor, head: torch.Tensor
    ) -> torch.Tensor:
        """``exp(logit_scale) * normalise(visual(x)) @ head.T`` (``visual`` projects itself)."""
        import torch.nn.functional as F

        emb = F.normalize(vision(pixel_values), dim=-1)
        return self.load()[0].logit_scale.exp() * emb @ head.to(emb.dtype).T
