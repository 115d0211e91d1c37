"""Task vectors and their linear combination (task arithmetic).

A task vector is the element-wise difference between a fine-tuned model and its pretrained
base, ``tau = theta_ft - theta_0``, over the floating-point keys of the state dict. Task
arithmetic adds a scaled sum of task vectors back onto the base:
``theta = theta_0 + lambda * sum_i tau_i`` (Ilharco et al., "Editing Models with Task
Arithmetic", arXiv 2212.04089).

Everything here is a pure function on tensors / state dicts: no models, no I/O. Functions that
combine many task vectors accept any iterable, so a caller can stream them one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import StateDict, check_compatible, float_keys

TaskVector = dict[str, torch.Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which to accumulate tensors of ``dtype``.

    Half-precision sums of many small differences lose most of their bits, so float16 and
    bfloat16 are promoted to float32; float32 and float64 are kept.
    """
    return torch.promote_types(dtype, torch.float32)


def task_vector(
    finetuned: StateDict,
    base: StateDict,
    name: str = "finetuned",
    base_name: str = PRETRAINED,
) -> TaskVector:
    """``tau = finetuned - base`` over the floating-point keys of ``base``.

    Args:
        finetuned: state dict of the fine-tuned model.
        base: state dict of the pretrained model.
        name: name of the fine-tuned model, for error messages.
        base_name: name of the base model, for error messages.

    Returns:
        A new dict ``key -> tensor`` in the accumulation dtype (:func:`compute_dtype`).

    Raises:
        FusionBenchError: if a key is missing or extra, or a shape or dtype differs (naming the
            model and the key), or a value is not finite.
    """
    check_compatible(base, base_name, finetuned, name)
    return {
        k: finetuned[k].to(compute_dtype(base[k].dtype)) - base[k].to(compute_dtype(base[k].dtype))
        for k in float_keys(base)
    }


def _check_same_keys(
    ref: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], what: str
) -> None:
    missing = [k for k in ref if k not in other]
    extra = [k for k in other if k not in ref]
    if missing or extra:
        key = missing[0] if missing else extra[0]
        raise FusionBenchError(
            f"{what}: key '{key}' is {'missing' if missing else 'unexpected'} "
            f"({len(missing)} missing, {len(extra)} unexpected): task vectors must share keys"
        )
    for k, t in other.items():
        if tuple(t.shape) != tuple(ref[k].shape):
            raise FusionBenchError(
                f"{what}: key '{k}' has shape {tuple(t.shape)}, expected {tuple(ref[k].shape)}"
            )


def sum_task_vectors(task_vectors: Iterable[Mapping[str, torch.Tensor]]) -> TaskVector:
    """``sum_i tau_i``, consuming the iterable one task vector at a time.

    Only the running sum and the current task vector are held in memory, so a generator that
    loads experts lazily keeps the peak at base + sum + one expert.

    Raises:
        FusionBenchError: if the iterable is empty or the task vectors' keys/shapes differ.
    """
    total: TaskVector | None = None
    for i, tv in enumerate(task_vectors):
        if total is None:
            total = {k: v.clone() for k, v in tv.items()}
            continue
        _check_same_keys(total, tv, f"task vector #{i}")
        for k, v in tv.items():
            total[k].add_(v)
    if total is None:
        raise FusionBenchError("no task vectors to merge: the model pool has no experts")
    return total


def apply_task_vector(
    base: StateDict, tv: Mapping[str, torch.Tensor], scaling_factor: float
) -> dict[str, torch.Tensor]:
    """``theta = base + scaling_factor * tv`` as a full state dict.

    Floating-point keys are combined in the accumulation dtype and cast back to ``base``'s
    dtype; all other keys (integer buffers) are taken from ``base`` unchanged.

    Raises:
        FusionBenchError: if ``tv``'s keys are not exactly ``base``'s floating-point keys.
    """
    fkeys = float_keys(base)
    _check_same_keys({k: base[k] for k in fkeys}, tv, "merged task vector")
    out: dict[str, torch.Tensor] = {}
    for k, v in base.items():
        if k in tv:
            delta = tv[k].to(device=v.device)
            out[k] = (v.to(delta.dtype) + scaling_factor * delta).to(v.dtype)
        else:
            out[k] = v
    return out
