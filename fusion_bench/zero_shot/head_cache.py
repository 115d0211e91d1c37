"""On-disk cache of CLIP zero-shot classification heads.

Building a head runs the text tower on ``classes x templates`` prompts (SUN397: 397 x 2,
Stanford Cars: 196 x 8, ...), which costs as much as evaluating a few hundred images and is the
same for every fused vision tower. Heads are therefore cached once per (text tower, task) under a
key that changes exactly when the result could: the text tower's weights and configuration, the
tokenizer's vocabulary, the class names and the templates.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

# Text-config fields that change the text tower's output for the same weights. Paths, versions
# and other bookkeeping fields are left out on purpose so that one checkpoint copied to another
# directory (or loaded by another transformers version) hits the same cache entries.
_TEXT_CONFIG_FIELDS = (
    "hidden_act",
    "layer_norm_eps",
    "num_attention_heads",
    "eos_token_id",
    "max_position_embeddings",
)


def hash_tensors(h, prefix: str, module: nn.Module) -> None:
    import torch

    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{prefix}{key}|{t.dtype}|{tuple(tensor.shape)}".encode())
        # Viewed as raw bytes so that bf16/fp16 weights (which numpy cannot hold) hash too.
        h.update(memoryview(t.view(torch.uint8).numpy()))


def text_tower_fingerprint(clip_model: nn.Module, tokenizer) -> str:
    """sha256 over everything of a CLIP model that shapes its text embeddings.

    Args:
        clip_model: a ``transformers.CLIPModel`` (``text_model``, ``text_projection``, ``config``).
        tokenizer: its tokenizer; the vocabulary is hashed (the tokenizer's runtime state such as
            padding settings is not, since it does not change token ids).
    """
    h = hashlib.sha256()
    hash_tensors(h, "text_model.", clip_model.text_model)
    hash_tensors(h, "text_projection.", clip_model.text_projection)
    text_config = clip_model.config.text_config
    h.update(json.dumps({f: getattr(text_config, f, None) for f in _TEXT_CONFIG_FIELDS}).encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(sorted(vocab.items())).encode())
    return h.hexdigest()


def head_key(fingerprint: str, classnames: Sequence[str], templates: Sequence[str]) -> str:
    """Cache key of the head of one task for the text tower with ``fingerprint``."""
    payload = {
        "text_tower": fingerprint,
        "classnames": list(classnames),
        "templates": list(templates),
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


class ZeroShotHeadCache:
    """Heads stored as ``<directory>/<key>.safetensors``, written atomically.

    Args:
        directory: the cache directory (created on first write).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str) -> torch.Tensor | None:
        """The cached head, or ``None`` if absent or unreadable (then it is rebuilt)."""
        from safetensors.torch import load_file

        path = self.path(key)
        if not path.exists():
            return None
        try:
            return load_file(str(path))["head"]
        except Exception:  # truncated or foreign file: treat as a miss and overwrite it
            return None

    def save(self, key: str, head: torch.Tensor, *, task: str) -> Path:
        """Write ``head`` atomically: a temporary file in the same directory, then rename."""
        from safetensors.torch import save_file

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {"head": head.detach().to("cpu").contiguous()},
                tmp,
                metadata={"task": task, "num_classes": str(head.shape[0])},
            )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get_or_compute(
        self, key: str, compute: Callable[[], torch.Tensor], *, task: str
    ) -> torch.Tensor:
        """The head under ``key``; computed with ``compute()`` and stored on a miss."""
        head = self.load(key)
        if head is None:
            head = compute().detach().to("cpu")
            self.save(key, head, task=task)
        return head
