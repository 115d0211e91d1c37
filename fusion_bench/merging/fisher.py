"""Fisher merging: per-parameter averages weighted by each model's diagonal Fisher information.

Matena & Raffel, "Merging Models with Fisher-Weighted Averaging" (arXiv 2111.09832)::

    theta_j = sum_i lambda_i F_i,j theta_i,j / sum_i lambda_i F_i,j
    F_i     = E_x E_{y ~ p_theta_i(y|x)} [ (d log p_theta_i(y|x) / d theta_i)^2 ]   (diagonal)

The expectation over ``y`` uses the model's own predictive distribution (the true Fisher, not
the "empirical Fisher" of the data labels). :func:`diagonal_fisher_sum` computes it from
per-example gradients, either exactly (``sum_y p_y g_y^2``, one gradient per example and class)
or with one label sampled per example.
:func:`fisher_weighted_average` merges models one at a time from their Fishers.

Pure functions on tensors and state dicts; the model enters only as a function
``logits_fn(params, inputs) -> logits``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import StateDict, check_compatible, float_keys
from fusion_bench.merging.task_arithmetic import compute_dtype

LogitsFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``logits_fn(params, inputs)``: class logits ``[batch, classes]`` of the model with ``params``."""

FISHER_LABELS = ("expected", "sampled")
"""``expected``: exact expectation over the model's predictive distribution (one gradient per
example and class); ``sampled``: one label per example drawn from that distribution."""


def _label_pairs(
    probs: torch.Tensor, labels: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(example index, one-hot label, weight)`` per gradient to take.

    With ``expected`` every (example, class) pair gets weight ``sqrt(p_y)``, so the squared
    weighted gradient is ``p_y g_y^2`` and their sum is the exact expectation. Pairs with
    ``p_y = 0`` contribute nothing and are skipped.
    """
    b, c = probs.shape
    device = probs.device
    if labels == "expected":
        example = torch.arange(b, device=device).repeat_interleave(c)
        label = torch.arange(c, device=device).repeat(b)
        weight = probs.reshape(-1).sqrt()
        keep = weight > 0
        example, label, weight = example[keep], label[keep], weight[keep]
    else:
        label = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        example = torch.arange(b, device=device)
        weight = torch.ones(b, device=device, dtype=probs.dtype)
    return example, torch.nn.functional.one_hot(label, c).to(probs.dtype), weight


def diagonal_fisher_sum(
    logits_fn: LogitsFn,
    params: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    labels: str = "expected",
    generator: torch.Generator | None = None,
    chunk_size: int = 16,
) -> dict[str, torch.Tensor]:
    """``sum_x E_{y ~ p(.|x)} (d log p(y|x) / d params)^2`` over the examples of ``inputs``.

    A sum over examples (divide by their number for the Fisher). Per-example gradients: one
    ordinary forward pass per example, then the gradients of its ``log p(y|x)`` for all its
    labels ``y`` in one backward pass batched over ``y`` (``torch.autograd.grad`` with
    ``is_grads_batched``, i.e. vmap over the backward only), ``chunk_size`` labels at a time.
    The forward pass is plain autograd, so any model works (a functorch transform of the whole
    forward pass breaks on models that, e.g., move modules inside ``forward``). If the batched
    backward is unsupported, falls back to one backward pass per label, with a warning.

    Args:
        logits_fn: ``logits_fn(params, inputs) -> [batch, classes]`` (e.g. a
            ``torch.func.functional_call`` of the model); deterministic (eval mode).
        params: the parameters to take gradients for (floating point).
        inputs: a batch ``[batch, ...]``.
        labels: ``"expected"`` (exact expectation over classes, ``classes`` gradients per
            example) or ``"sampled"`` (one label drawn from ``p(.|x)``, one gradient per example).
        generator: the generator of the sampled labels (CPU).
        chunk_size: labels per batched backward pass; bounds memory at ``chunk_size`` copies
            of the gradient.

    Returns:
        ``name -> summed squared gradients``, shaped like ``params``, in at least float32.
    """
    if labels not in FISHER_LABELS:
        raise FusionBenchError(f"fisher labels must be one of {FISHER_LABELS}, got '{labels}'")
    if chunk_size < 1:
        raise FusionBenchError(f"chunk_size must be >= 1, got {chunk_size}")
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    names = list(leaves)
    with torch.no_grad():
        probs = torch.softmax(logits_fn(leaves, inputs).float(), dim=-1)
    example, one_hot, weight = _label_pairs(probs, labels, generator)
    # row r: the cotangent weight_r * e_{y_r}, whose vector-Jacobian product is w_r g_{y_r}
    cotangents = one_hot * weight[:, None]
    out = {
        k: torch.zeros(v.shape, dtype=compute_dtype(v.dtype), device=v.device)
        for k, v in leaves.items()
    }
    batched = True
    for b in torch.unique(example).tolist():
        rows = cotangents[example == b]
        with torch.enable_grad():
            log_probs = torch.log_softmax(logits_fn(leaves, inputs[b : b + 1]).float(), -1)[0]
            step = chunk_size if batched else 1
            for start in range(0, rows.shape[0], step):
                chunk = rows[start : start + step]
                if batched:
                    try:
                        grads = _vjps(log_probs, leaves, names, chunk, batched=True)
                    except RuntimeError as e:
                        warnings.warn(
                            f"Fisher: batched backward unsupported ({str(e).splitlines()[0][:120]}"
                            "); taking one backward pass per label instead",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                        batched = False
                if not batched:
                    grads = [_vjps(log_probs, leaves, names, r[None], False) for r in chunk]
                    grads = [
                        torch.cat(gs) if gs[0] is not None else None
                        for gs in zip(*grads, strict=True)
                    ]
                for n, g in zip(names, grads, strict=True):
                    if g is not None:
                        out[n].add_(g.to(out[n].dtype).square().sum(dim=0))
                del grads
        del log_probs  # frees this example's graph
    return out


def _vjps(
    log_probs: torch.Tensor,
    leaves: Mapping[str, torch.Tensor],
    names: Sequence[str],
    cotangents: torch.Tensor,
    batched: bool,
) -> list[torch.Tensor | None]:
    """``[k, *shape]`` gradients of ``cotangents @ log_probs`` per leaf (None: unused leaf)."""
    with warnings.catch_warnings():
        # e.g. SDPA on CPU has no batching rule yet: vmap loops over it, correct but slower
        warnings.filterwarnings("ignore", message=".*performance drop.*", category=UserWarning)
        grads = torch.autograd.grad(
            log_probs,
            [leaves[n] for n in names],
            grad_outputs=cotangents if batched else cotangents[0],
            is_grads_batched=batched,
            retain_graph=True,  # the graph is freed with log_probs
            allow_unused=True,
        )
    return [g if g is None or batched else g[None] for g in grads]


def fisher_norm(fisher: Mapping[str, torch.Tensor]) -> float:
    """Global L2 norm of a diagonal Fisher over all its tensors."""
    return math.sqrt(sum(float(f.double().square().sum()) for f in fisher.values()))


def fisher_weighted_average(
    models: Iterable[tuple[str, StateDict, Mapping[str, torch.Tensor]]],
    coefficients: Sequence[float] | None = None,
    minimal_fisher_weight: float = 1e-6,
    normalize_fisher_weight: bool = False,
) -> dict[str, torch.Tensor]:
    """``theta = sum_i c_i (F_i + eps) theta_i / sum_i c_i (F_i + eps)``, one model at a time.

    Args:
        models: ``(name, state_dict, fisher)`` triples, consumed one at a time (only the
            numerator, the denominator and the current model are in memory). ``fisher`` maps
            a subset of the floating-point keys to their diagonal Fisher (same shapes); the
            same keys for every model. Floating-point keys without a Fisher (parameters the
            log-likelihood does not depend on, float buffers) get the plain average; integer
            buffers are copied from the first model.
        coefficients: ``lambda_i``, one per model, non-negative, not all zero; ``None``: equal.
        minimal_fisher_weight: ``eps`` added to every Fisher entry, so that a parameter no
            model is sensitive to gets the (coefficient-weighted) average, not ``0 / 0``.
        normalize_fisher_weight: divide each model's Fisher by its global L2 norm first
            (``c_i = lambda_i / (||F_i|| + eps)``, the upstream FusionBench option), so that
            every model has the same total say regardless of its Fisher's scale.

    Returns:
        The merged state dict, floats cast back to their original dtype.

    Raises:
        FusionBenchError: on no models, a wrong number of coefficients, bad coefficients, or a
            Fisher whose keys / shapes do not match.
    """
    if minimal_fisher_weight < 0:
        raise FusionBenchError(f"minimal_fisher_weight must be >= 0, got {minimal_fisher_weight}")
    if coefficients is not None:
        coefficients = [float(c) for c in coefficients]
        if any(c < 0 for c in coefficients) or not any(c > 0 for c in coefficients):
            raise FusionBenchError(
                f"fisher_scaling_coefficients must be >= 0 and not all zero, got {coefficients}"
            )
    ref: dict[str, torch.Tensor] = {}
    ref_name = ""
    fisher_keys: list[str] = []
    buffers: dict[str, torch.Tensor] = {}
    num: dict[str, torch.Tensor] = {}
    den: dict[str, torch.Tensor] = {}
    plain: dict[str, torch.Tensor] = {}
    count = 0
    for name, sd, fisher in models:
        if count == 0:
            check_compatible(sd, name, sd, name)
            ref_name = name
            ref = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}
            buffers = {k: v for k, v in sd.items() if not v.is_floating_point()}
            fisher_keys = list(fisher)
            bad = [k for k in fisher_keys if k not in sd or not sd[k].is_floating_point()]
            if bad:
                raise FusionBenchError(
                    f"model '{name}': Fisher key '{bad[0]}' is not a floating-point key of it"
                )
        else:
            check_compatible(ref, ref_name, sd, name)
            if set(fisher) != set(fisher_keys):
                diff = sorted(set(fisher) ^ set(fisher_keys))
                raise FusionBenchError(
                    f"model '{name}': its Fisher covers different keys than '{ref_name}''s "
                    f"(first difference '{diff[0]}')"
                )
        if coefficients is not None and count >= len(coefficients):
            raise FusionBenchError(
                f"got more models than fisher_scaling_coefficients ({len(coefficients)})"
            )
        c = 1.0 if coefficients is None else coefficients[count]
        if normalize_fisher_weight:
            # upstream: c_i * (1/(|F_i|+eps)) / sum_j (1/(|F_j|+eps)); the sum cancels in num/den
            c = c / (fisher_norm(fisher) + minimal_fisher_weight)
        for k in fisher_keys:
            theta = sd[k].to(compute_dtype(sd[k].dtype))
            f = fisher[k]
            if tuple(f.shape) != tuple(theta.shape):
                raise FusionBenchError(
                    f"model '{name}': Fisher of '{k}' has shape {tuple(f.shape)}, the parameter "
                    f"{tuple(theta.shape)}"
                )
            w = (f.to(device=theta.device, dtype=theta.dtype) + minimal_fisher_weight) * c
            if k in num:
                num[k].add_(w * theta)
                den[k].add_(w)
            else:
                num[k], den[k] = w * theta, w
        for k in float_keys(sd):
            if k not in num:
                v = sd[k].to(compute_dtype(sd[k].dtype))
                plain[k] = plain[k].add_(v) if k in plain else v.clone()
        count += 1
    if count == 0:
        raise FusionBenchError("no models to merge: the model pool has no experts")
    if coefficients is not None and count != len(coefficients):
        raise FusionBenchError(
            f"got {count} models but {len(coefficients)} fisher_scaling_coefficients"
        )
    out: dict[str, torch.Tensor] = {}
    for k, v in ref.items():
        if k in num:
            if not bool((den[k] > 0).all()):
                raise FusionBenchError(
                    f"Fisher merging: '{k}' has zero Fisher in every model; set "
                    "minimal_fisher_weight > 0 to fall back to the average there"
                )
            out[k] = (num[k] / den[k]).to(v.dtype)
        elif k in plain:
            out[k] = (plain[k] / count).to(v.dtype)
        else:
            out[k] = buffers[k]
    return out
