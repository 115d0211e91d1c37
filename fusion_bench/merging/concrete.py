"""Concrete (relaxed Bernoulli / Gumbel-sigmoid) masks over task-vector entries.

Tang et al., "Concrete Subspace Learning based Interference Elimination for Multi-task Model
Fusion", arXiv 2312.06173, learn a binary mask ``m`` shared by all task vectors through its
continuous relaxation (Maddison et al., "The Concrete Distribution", arXiv 1611.00712; Jang et
al., "Categorical Reparameterization with Gumbel-Softmax", arXiv 1611.01144). For a logit ``l``
and temperature ``T``::

    u ~ Uniform(0, 1),   g = log u - log(1 - u)            (logistic noise)
    m = sigmoid((l + g) / T)                               (Concrete sample, differentiable in l)

As ``T -> 0`` the sample tends to the hard indicator ``[l + g > 0]``, a ``Bernoulli(sigmoid(l))``
draw. The mask is then rescaled to mean one per tensor, ``m / mean(m)``, so that masking keeps the
task vector's overall magnitude (as DARE's ``1 / (1 - p)``, and as the reference code does).

Everything here is a pure function on tensors; randomness comes only from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusion_bench.errors import FusionBenchError

EVAL_MASKS = ("sample", "discrete", "hard", "expected")
"""How the final (fixed) mask is taken from the learned logits, see :func:`eval_mask`."""


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise FusionBenchError(f"Concrete temperature must be > 0, got {temperature}")


def logistic_noise(
    shape: Sequence[int] | torch.Size,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``log u - log(1 - u)`` with ``u ~ Uniform(0, 1)``, drawn on the generator's device.

    ``u`` is kept inside ``[tiny, 1 - eps]`` so the noise is always finite.
    """
    u = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    finfo = torch.finfo(dtype)
    u = u.clamp(finfo.tiny, 1.0 - finfo.eps)
    return torch.log(u) - torch.log1p(-u)


def concrete_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """Relaxed Bernoulli sample ``sigmoid((logits + noise) / temperature)`` (differentiable)."""
    check_temperature(temperature)
    return torch.sigmoid((logits + noise.to(logits.device, logits.dtype)) / temperature)


def relaxed_bernoulli(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """A Concrete sample of ``logits`` with fresh logistic noise from ``generator``."""
    return concrete_sample(logits, logistic_noise(logits.shape, generator), temperature)


def bernoulli_mask(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A binary ``Bernoulli(sigmoid(logits))`` sample: the ``T -> 0`` limit of the Concrete."""
    noise = logistic_noise(logits.shape, generator).to(logits.device)
    return (logits.detach() + noise > 0).to(logits.dtype)


def hard_mask(logits: torch.Tensor) -> torch.Tensor:
    """The most likely binary mask: ``1`` where ``sigmoid(logits) > 0.5``, i.e. ``logits > 0``."""
    return (logits.detach() > 0).to(logits.dtype)


def rescale_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask / mean(mask)`` (mean one); an all-zero mask stays zero instead of dividing by 0."""
    mean = mask.mean()
    return torch.where(mean > 0, mask / mean.clamp_min(torch.finfo(mask.dtype).tiny), mask)


def eval_mask(
    logits: torch.Tensor,
    kind: str,
    temperature: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The fixed mask used after training (no gradient).

    Args:
        logits: learned mask logits.
        kind: ``"sample"``: one Concrete sample at ``temperature`` (the reference code's
            ``eval_mask_type: continuous``); ``"discrete"``: a Bernoulli sample; ``"hard"``:
            ``logits > 0``; ``"expected"``: ``sigmoid(logits)``.
        temperature: Concrete temperature (``"sample"`` only).
        generator: randomness of ``"sample"`` / ``"discrete"``.
    """
    with torch.no_grad():
        if kind == "sample":
            return relaxed_bernoulli(logits.detach(), temperature, generator)
        if kind == "discrete":
            return bernoulli_mask(logits, generator)
        if kind == "hard":
            return hard_mask(logits)
        if kind == "expected":
            return torch.sigmoid(logits.detach())
    raise FusionBenchError(f"eval_mask must be one of {', '.join(EVAL_MASKS)}, got '{kind}'")
