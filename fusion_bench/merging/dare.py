"""DARE: Drop And REscale task-vector entries.

Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", arXiv 2311.03099. Each entry of a task vector is dropped independently with
probability ``p`` and the survivors are rescaled by ``1 / (1 - p)``:
``tau' = (m * tau) / (1 - p)`` with ``m ~ Bernoulli(1 - p)``, so ``E[tau'] = tau``. The
sparsified task vectors then go through any task-vector merge (task arithmetic, TIES, average).

Randomness comes only from the ``torch.Generator`` passed in, so results are reproducible from a
seed and independent of global RNG state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fusion_bench.errors import FusionBenchError


def check_drop_rate(p: float) -> None:
    """Raise unless ``0 <= p < 1`` (``p = 1`` would drop everything and divide by zero)."""
    if not 0.0 <= p < 1.0:
        raise FusionBenchError(f"DARE drop_rate must be in [0, 1), got {p}")


def dare(
    tv: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True
) -> torch.Tensor:
    """Drop each entry of ``tv`` with probability ``p``; rescale survivors by ``1/(1-p)``.

    Args:
        tv: a task-vector tensor.
        p: drop probability in [0, 1).
        generator: source of randomness; the mask is drawn on the generator's device.
        rescale: divide survivors by ``1 - p`` (the paper); ``False`` only drops.

    Returns:
        A new tensor (``tv`` itself is not modified).
    """
    check_drop_rate(p)
    if p == 0.0:
        return tv.clone()
    keep = torch.rand(tv.shape, generator=generator, device=generator.device) >= p
    keep = keep.to(tv.device)
    out = torch.where(keep, tv, torch.zeros((), dtype=tv.dtype, device=tv.device))
    if rescale:
        out = out / (1.0 - p)
    return out


def dare_state_dict(
    tv: Mapping[str, torch.Tensor], p: float, generator: torch.Generator, rescale: bool = True
) -> dict[str, torch.Tensor]:
    """:func:`dare` applied to every tensor of a task vector, in key order.

    The masks are drawn in the order of ``tv``'s keys, so a fixed generator state gives the same
    masks for the same architecture.
    """
    return {k: dare(t, p, generator, rescale) for k, t in tv.items()}
