"""State-dict helpers shared by the merging maths: compatibility checks and float keys."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fusion_bench.errors import FusionBenchError

StateDict = Mapping[str, torch.Tensor]


def check_compatible(ref: StateDict, ref_name: str, other: StateDict, other_name: str) -> None:
    """Raise unless ``other`` has exactly ``ref``'s keys, shapes and dtypes and finite values.

    Raises:
        FusionBenchError: naming ``other_name`` and the first offending key.
    """
    for key, t in other.items():
        if key not in ref:
            raise FusionBenchError(
                f"model '{other_name}' has key '{key}' that '{ref_name}' lacks: all models of a "
                "pool must share one architecture"
            )
        r = ref[key]
        if tuple(t.shape) != tuple(r.shape):
            raise FusionBenchError(
                f"model '{other_name}': key '{key}' has shape {tuple(t.shape)} but '{ref_name}' "
                f"has {tuple(r.shape)}: all models of a pool must share one architecture"
            )
        if t.dtype != r.dtype:
            raise FusionBenchError(
                f"model '{other_name}': key '{key}' has dtype {t.dtype} but '{ref_name}' has "
                f"{r.dtype}: convert the checkpoints to one dtype"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise FusionBenchError(
                f"model '{other_name}': key '{key}' holds NaN or inf values: the checkpoint is corrupt"
            )
    missing = [k for k in ref if k not in other]
    if missing:
        raise FusionBenchError(
            f"model '{other_name}' lacks key '{missing[0]}' that '{ref_name}' has "
            f"({len(missing)} missing): all models of a pool must share one architecture"
        )


def float_keys(sd: StateDict) -> list[str]:
    """Keys of floating-point tensors: the ones merging methods combine.

    Integer buffers (e.g. position ids) are copied from the base model unchanged.
    """
    return [k for k, v in sd.items() if v.is_floating_point()]
