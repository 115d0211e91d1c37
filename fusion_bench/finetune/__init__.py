"""Fine-tuning of experts.

* :mod:`fusion_bench.finetune.clip_vision`: a CLIP vision tower against a frozen zero-shot head,
  the recipe of the CLIP experts (``scripts/finetune_clip.py``; the tiny benchmark's builder).
* :mod:`fusion_bench.finetune.lora`: LoRA and linearised LoRA (L-LoRA) on text-to-text GLUE
  tasks.

Importing this package is cheap (no torch / transformers at import time).
"""

from __future__ import annotations

_EXPORTS = {
    "finetune_vision": "clip_vision",
    "finetune_lora": "lora",
    "save_finetuned": "lora",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
