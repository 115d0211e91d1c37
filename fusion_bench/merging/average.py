"""Weighted averages of model weights: ``theta = sum_i w_i * theta_i``.

Pure functions on state dicts. The models arrive through an iterable of ``(name, state_dict)``
pairs and are accumulated one at a time, so a lazy producer keeps only the running sum and the
current model in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import StateDict, check_compatible, float_keys
from fusion_bench.merging.task_arithmetic import compute_dtype


def normalize_weights(weights: Sequence[float]) -> list[float]:
    """``w_i / sum_j w_j``.

    Raises:
        FusionBenchError: if the weights sum to zero.
    """
    total = float(sum(weights))
    if total == 0.0:
        raise FusionBenchError(f"cannot normalize weights {list(weights)}: they sum to zero")
    return [float(w) / total for w in weights]


def weighted_sum(
    state_dicts: Iterable[tuple[str, StateDict]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """``sum_i w_i * theta_i`` over the floating-point keys, streaming over ``state_dicts``.

    Args:
        state_dicts: ``(name, state_dict)`` pairs, consumed one at a time; every state dict is
            checked against the first (same keys, shapes, dtypes, finite values).
        weights: one weight per state dict, in order. Used as given (normalize them first for
            an average).

    Returns:
        A full state dict: floating-point keys are the weighted sum (accumulated in at least
        float32, cast back to the original dtype); other keys are copied from the first model.

    Raises:
        FusionBenchError: if the number of state dicts differs from the number of weights, or a
            model is incompatible with the first.
    """
    weights = [float(w) for w in weights]
    # The first model is the reference layout (kept as meta tensors, so it can be freed) and
    # the source of the non-float tensors (integer buffers), which are copied, not averaged.
    ref: dict[str, torch.Tensor] = {}
    ref_name = ""
    buffers: dict[str, torch.Tensor] = {}
    acc: dict[str, torch.Tensor] = {}
    count = 0
    for name, sd in state_dicts:
        if count >= len(weights):
            raise FusionBenchError(
                f"got more models than weights ({len(weights)} weights): give one weight per expert"
            )
        w = weights[count]
        if count == 0:
            check_compatible(sd, name, sd, name)
            ref_name = name
            ref = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}
            buffers = {k: v for k, v in sd.items() if not v.is_floating_point()}
            acc = {k: sd[k].to(compute_dtype(sd[k].dtype)) * w for k in float_keys(sd)}
        else:
            check_compatible(ref, ref_name, sd, name)
            for k, a in acc.items():
                a.add_(sd[k].to(device=a.device, dtype=a.dtype), alpha=w)
        count += 1
    if count == 0:
        raise FusionBenchError("no models to average: the model pool has no experts")
    if count != len(weights):
        raise FusionBenchError(
            f"got {count} models but {len(weights)} weights: give one weight per expert"
        )
    return {k: acc[k].to(v.dtype) if k in acc else buffers[k] for k, v in ref.items()}
