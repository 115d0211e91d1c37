"""Fine-tuning a CLIP vision tower against a frozen zero-shot head: the recipe of the experts.

Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089: a task's expert is
the pretrained image encoder fine-tuned with the cross-entropy of zero-shot logits against the
*frozen* classification head built from the text tower (class names x prompt templates, see
:func:`~fusion_bench.models.clip_zero_shot.zero_shot_head`). Only the vision tower moves, so
every expert of one pretrained CLIP keeps the same text side, and its task vector
``tau = theta_expert - theta_pretrained`` lives in the vision tower alone. For step ``t``::

    logits = exp(logit_scale) * normalise(P f(x; theta_t)) @ head.T    (P, head: frozen)
    theta_{t+1} = Adam(theta_t, grad CE(logits, y), lr_t)
    lr_t = lr * decay**depth(param) * s(t)      s: linear warmup then cosine (or constant)

The published ``tanganke/clip-vit-*_<task>`` experts (the CLIP models of this benchmark) used
Adam, lr 1e-5, 4000 steps, batch 32, no layer decay, frozen zero-shot heads
(:data:`PUBLISHED_RECIPE`). The offline tiny benchmark trains its experts with this same
function (:func:`fusion_bench.tinybench.train.finetune`), scaled down and with a layer-wise lr
decay. ``scripts/finetune_clip.py`` is the user-facing entry point.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from transformers import CLIPVisionModel

log = logging.getLogger(__name__)

PUBLISHED_RECIPE: dict[str, Any] = {
    "lr": 1e-5,
    "steps": 4000,
    "batch_size": 32,
    "layer_decay": 1.0,
    "warmup_steps": 0,
    "schedule": "cosine",
}
"""Hyperparameters of the published CLIP experts (``shared/reference``): Adam, vision tower
only, frozen zero-shot heads."""

SCHEDULES = ("cosine", "constant")

# ``encoder.layers.<i>.`` anywhere in a parameter name: transformers 5 ``CLIPVisionModel``
# names it at the top level, transformers 4 below ``vision_model.``.
_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Multiplier of the base lr at optimisation step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup`` for the first ``warmup`` steps, then either a cosine
    decay from 1 to 0 over the remaining ``total - warmup`` steps or a constant 1.

    Args:
        step: the step about to be taken.
        total: total number of steps.
        warmup: number of warmup steps (0: none).
        schedule: ``"cosine"`` or ``"constant"``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def layer_groups(vision: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """Adam parameter groups with layer-wise lr decay: ``lr * decay**d`` at depth ``d`` below
    the top, so early, generic layers move least (as in BEiT-style ViT fine-tuning).

    Depth 0: the final layer norm; ``n - i``: encoder layer ``i`` of ``n``; ``n + 1``: the
    embeddings and the pre-layer-norm. Only parameters that require grad are grouped; groups are
    sorted by depth, parameters in module order.

    Args:
        vision: a ``CLIPVisionModel`` (or anything with ``config.num_hidden_layers`` and
            ``encoder.layers.<i>.`` parameter names).
        lr: learning rate of the top.
        decay: factor per layer (1.0: the same lr everywhere).
    """
    n = vision.config.num_hidden_layers
    groups: dict[int, list[nn.Parameter]] = {}
    for name, p in vision.named_parameters():
        if not p.requires_grad:
            continue
        layer = _LAYER.search(name)
        if layer is not None:
            depth = n - int(layer.group(1))
        elif "post_layernorm" in name:
            depth = 0
        else:  # embeddings, pre-layernorm
            depth = n + 1
        groups.setdefault(depth, []).append(p)
    return [{"params": ps, "lr": lr * decay**d} for d, ps in sorted(groups.items())]


class _Projection(nn.Module):
    """Frozen copies of what :func:`zero_shot_logits` reads from the CLIP besides the tower.

    Training must not touch the caller's CLIP (nor hold its text tower on the device, nor
    accumulate gradients into its projection), so only these small pieces are copied.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.visual_projection = copy.deepcopy(clip_model.visual_projection)
        self.logit_scale = nn.Parameter(clip_model.logit_scale.detach().clone())
        self.requires_grad_(False)


def finetune_vision(
    clip_model: nn.Module,
    head: torch.Tensor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int = PUBLISHED_RECIPE["steps"],
    lr: float = PUBLISHED_RECIPE["lr"],
    layer_decay: float = PUBLISHED_RECIPE["layer_decay"],
    warmup_steps: int = PUBLISHED_RECIPE["warmup_steps"],
    schedule: str = PUBLISHED_RECIPE["schedule"],
    vision_model: nn.Module | None = None,
    fabric: Fabric | None = None,
    progress: Any | None = None,
    log_every: int = 0,
    on_log: Callable[[int, float, float], None] | None = None,
) -> CLIPVisionModel:
    """Fine-tune a CLIP vision tower on one task against a frozen zero-shot head.

    Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089 (see the module
    docstring for the objective). Exactly ``steps`` batches are drawn from ``batches``, one per
    step and no more, so a caller's random stream that produces them is left where a plain
    loop of ``steps`` steps would leave it.

    Args:
        clip_model: the pretrained ``transformers.CLIPModel``; only its ``visual_projection``
            and ``logit_scale`` are read (copied, frozen). It is not modified.
        head: the task's zero-shot head ``[num_classes, projection_dim]`` (frozen; an
            inference-mode tensor is fine).
        batches: iterable of ``(pixel_values [B, 3, H, W], labels [B])``; at least ``steps``.
        steps: optimisation steps.
        lr: Adam learning rate (of the top layers when ``layer_decay < 1``).
        layer_decay: lr factor per layer below the top (:func:`layer_groups`); 1.0: none.
        warmup_steps: linear warmup steps before the schedule (:func:`lr_factor`).
        schedule: ``"cosine"`` (to 0 at ``steps``) or ``"constant"``.
        vision_model: the tower to train, in place; ``None``: a copy of
            ``clip_model.vision_model`` (the caller's model stays unchanged).
        fabric: Lightning Fabric that places the tower, optimiser and batches on its device and
            applies its precision; ``None``: plain PyTorch on the tower's device.
        progress: optional ``tqdm`` bar, advanced every step with the loss as postfix.
        log_every: every this many steps (and at the last one), log the mean loss since the
            last log line (``logging`` at INFO, ``fabric.log_dict`` when a Fabric is given;
            under DDP each process logs its own batches' loss); 0: never.
        on_log: called as ``on_log(step, mean_loss, lr)`` at each log point (1-based step).

    Returns:
        The fine-tuned tower (unwrapped from Fabric), in eval mode with gradients off; its
        attribute ``train_losses`` lists the loss of every step.

    Raises:
        FusionBenchError: non-positive ``steps`` / ``lr``, ``layer_decay`` outside ``(0, 1]``,
            an unknown ``schedule``, a head that does not match the projection, or fewer than
            ``steps`` batches.
    """
    if steps < 1 or not lr > 0:
        raise FusionBenchError(f"finetune_vision needs steps >= 1 and lr > 0 (got {steps}, {lr})")
    if not 0 < layer_decay <= 1:
        raise FusionBenchError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if schedule not in SCHEDULES:
        raise FusionBenchError(f"unknown schedule '{schedule}'; choose from {', '.join(SCHEDULES)}")
    proj_dim = clip_model.visual_projection.out_features
    if head.ndim != 2 or head.shape[1] != proj_dim:
        raise FusionBenchError(
            f"the zero-shot head has shape {tuple(head.shape)}; expected [classes, {proj_dim}]"
        )
    from fusion_bench.models.clip_zero_shot import zero_shot_logits

    projection = _Projection(clip_model)
    if vision_model is None:
        vision_model = copy.deepcopy(clip_model.vision_model)
    vision = vision_model.requires_grad_(True).train()
    head = head.detach().clone()  # an inference-mode tensor cannot be saved for backward
    opt = torch.optim.Adam(layer_groups(vision, lr, layer_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, warmup_steps, schedule)
    )
    if fabric is not None:
        module, opt = fabric.setup(vision, opt)
        # True half precision (e.g. bf16-true) converts the tower; the projection follows it.
        dtype = next(vision.parameters()).dtype
        projection = fabric.to_device(projection.to(dtype))
        head = fabric.to_device(head)
        autocast = fabric.autocast  # mixed precision also covers the projection
    else:
        module = vision
        device = next(vision.parameters()).device
        projection, head = projection.to(device), head.to(device)
        autocast = contextlib.nullcontext

    losses: list[float] = []
    it = iter(batches)
    logged = 0  # steps covered by the previous log line
    for step in range(steps):
        try:
            pixels, labels = next(it)  # one batch per step, never one ahead
        except StopIteration:
            raise FusionBenchError(
                f"the batches ran out after {step} of {steps} steps; pass an endless iterator"
            ) from None
        if fabric is not None:
            pixels, labels = fabric.to_device((pixels, labels))
        else:
            pixels, labels = pixels.to(device), labels.to(device)
        with autocast():
            logits = zero_shot_logits(projection, module, pixels, head)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        if fabric is not None:
            fabric.backward(loss)
        else:
            loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update()
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if log_every > 0 and (done % log_every == 0 or done == steps):
            mean = sum(losses[logged:]) / (done - logged)
            step_lr = lr * lr_factor(step, steps, warmup_steps, schedule)  # this step's top lr
            logged = done
            log.info("step %d/%d  loss %.4f  lr %.3g", done, steps, mean, step_lr)
            if fabric is not None:
                fabric.log_dict({"train/loss": mean, "train/lr": step_lr}, step=done)
            if on_log is not None:
                on_log(done, mean, step_lr)
    vision.eval().requires_grad_(False)
    vision.train_losses = losses
    return vision
