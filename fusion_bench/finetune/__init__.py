"""Fine-tuning of experts: LoRA and linearised LoRA (L-LoRA) on text-to-text GLUE tasks.

See :mod:`fusion_bench.finetune.lora`. Importing this package is cheap (no torch / transformers
at import time).
"""

from __future__ import annotations

__all__ = ["finetune_lora", "save_finetuned"]


def __getattr__(name: str):
    if name in __all__:
        from fusion_bench.finetune import lora

        return getattr(lora, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
