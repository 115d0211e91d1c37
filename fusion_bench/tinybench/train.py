"""Pretraining a tiny CLIP and fine-tuning one vision tower per task (the experts' recipe).

* :func:`pretrain`: contrastive image-text pretraining of both towers on the union of the tasks'
  train images, each paired with ``template.format(classname)`` for a random template. Captions
  of the same class are all positives of each other (the multi-positive InfoNCE of UniCL, Yang
  et al., arXiv 2204.03610), since a batch holds many images of one class. In each task a
  fraction of the classes is often captioned with another class's name (:func:`confused_captions`;
  ``confusion_rate`` of their captions, e.g. 0.6), as web captions are wrong in systematic
  ways: the features still separate those classes, but zero-shot classification prefers the
  wrong name by a small margin, which is the gap that fine-tuning closes on the real benchmark
  (zero-shot CLIP is weak on EuroSAT, SVHN, GTSRB...). The margin matters for merging: with
  always-wrong captions (rate 1.0, build version 2) an expert must move a class all the way from
  one caption to the other, its task vector helps little at lambda 0.3 while the other seven
  interfere, and task arithmetic fell below the pretrained model (60.0% vs 61.3%); at rate 0.6 a
  fraction of the task vector already flips the confused classes (see BUILD_INFO.json and
  results/ for the measured accuracies).
* :func:`finetune`: the experts' recipe, :func:`fusion_bench.finetune.clip_vision.finetune_vision`
  (the function behind ``scripts/finetune_clip.py``), fed with in-memory batches: cross-entropy
  of :func:`~fusion_bench.models.clip_zero_shot.zero_shot_logits` against the frozen zero-shot
  head of one task; only the vision tower trains (Adam, warmup + cosine schedule), as for the
  ``tanganke/clip-vit-*_<task>`` experts (Ilharco et al., "Editing Models with Task Arithmetic",
  arXiv 2212.04089). A layer-wise lr decay keeps the lower layers close to the pretrained ones,
  as they stay in large pretrained ViTs: without it, the tiny tower's task vectors interfere far
  more than real ones (measured on build version 2, task arithmetic at lambda 0.3: 54.4% with a
  flat lr of 1e-3 against 60.0% with the decay).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fusion_bench.finetune.clip_vision import finetune_vision, lr_factor
from fusion_bench.models.clip_zero_shot import zero_shot_logits
from fusion_bench.tinybench import tokenizer as tk

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> normalised ``float [N, 3, H, W]``, exactly what
    :func:`~fusion_bench.models.clip_zero_shot.image_transform` gives for images of the model's
    own size (its resize and centre crop are then identities)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def confused_captions(
    task_of_class: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Caption class of each class: in each task, ``round(fraction * K)`` random classes are
    (partly, see :func:`pretrain`) captioned with the name of another class of that group (a
    cyclic shift), as systematic caption errors of web data would; the rest keep their own
    name."""
    mapping = np.arange(len(task_of_class))
    for t in np.unique(task_of_class):
        ids = np.flatnonzero(task_of_class == t)
        k = int(round(fraction * len(ids)))
        if k >= 2:
            chosen = rng.choice(ids, size=k, replace=False)
            mapping[chosen] = np.roll(chosen, 1)
    return mapping


def make_clip(profile, vocab_size: int, image_size: int, seed: int):
    """A randomly initialised tiny ``transformers.CLIPModel`` (deterministic for ``seed``)."""
    from transformers import CLIPConfig, CLIPModel

    common = dict(
        hidden_size=profile.hidden,
        intermediate_size=profile.mlp_ratio * profile.hidden,
        num_hidden_layers=profile.layers,
        num_attention_heads=profile.heads,
    )
    config = CLIPConfig(
        text_config=dict(
            common,
            vocab_size=vocab_size,
            max_position_embeddings=tk.MAX_LENGTH,
            pad_token_id=tk.PAD_ID,
            bos_token_id=tk.BOS_ID,
            eos_token_id=tk.EOS_ID,
        ),
        vision_config=dict(common, image_size=image_size, patch_size=profile.patch),
        projection_dim=profile.projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


def pretrain(
    model,
    tokenizer,
    pixels: torch.Tensor,
    classes: torch.Tensor,
    prompts: Sequence[Sequence[str]],
    task_of_class: torch.Tensor,
    profile,
    gen: torch.Generator,
    progress=None,
    caption_of_class: torch.Tensor | None = None,
) -> list[float]:
    """Contrastive pretraining in place; returns the loss per step.

    Args:
        model: the ``CLIPModel``.
        tokenizer: its tokenizer.
        pixels: normalised training images ``[N, 3, H, W]`` of all tasks.
        classes: global class id of each image ``[N]``.
        prompts: per global class, its captions (one per template).
        task_of_class: task index of each global class ``[C]``.
        profile: the build profile (steps, batch size, lr, caption noise).
        gen: randomness for batches, templates and caption noise.
        progress: optional ``tqdm`` bar, updated with the loss.
        caption_of_class: per global class, the class its confused captions name (systematic
            caption errors, :func:`confused_captions`), used for a fraction
            ``profile.confusion_rate`` of its captions; ``None``: every class names itself.
    """
    flat = [p for ps in prompts for p in ps]
    tok = tokenizer(flat, padding=True, return_tensors="pt")
    counts = torch.tensor([len(ps) for ps in prompts])
    starts = torch.cumsum(counts, 0) - counts
    cls_range = [
        torch.nonzero(task_of_class == t)[:, 0] for t in range(int(task_of_class.max()) + 1)
    ]
    first = torch.stack([r[0] for r in cls_range])
    size = torch.stack([torch.tensor(len(r)) for r in cls_range])
    opt = torch.optim.AdamW(model.parameters(), lr=profile.pretrain_lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, profile.pretrain_steps, profile.pretrain_steps // 10)
    )
    model.train()
    losses = []
    for _ in range(profile.pretrain_steps):
        idx = torch.randint(len(pixels), (profile.pretrain_batch,), generator=gen)
        c = classes[idx].clone()
        if caption_of_class is not None:
            confused = torch.rand(len(c), generator=gen) < profile.confusion_rate
            c = torch.where(confused, caption_of_class[c], c)
        noisy = torch.rand(len(c), generator=gen) < profile.caption_noise
        t = task_of_class[c[noisy]]
        c[noisy] = first[t] + (torch.rand(len(t), generator=gen) * size[t]).long()
        p = starts[c] + (torch.rand(len(c), generator=gen) * counts[c]).long()
        out = model(
            input_ids=tok["input_ids"][p],
            attention_mask=tok["attention_mask"][p],
            pixel_values=pixels[idx],
        )
        pos = (c[:, None] == c[None, :]).float()
        target = pos / pos.sum(dim=1, keepdim=True)
        loss = 0.5 * (
            F.cross_entropy(out.logits_per_image, target)
            + F.cross_entropy(out.logits_per_text, target)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if progress is not None:
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def finetune(
    model,
    head: torch.Tensor,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    profile,
    gen: torch.Generator,
    progress=None,
):
    """A copy of ``model.vision_model`` fine-tuned on one task against the frozen ``head``.

    :func:`~fusion_bench.finetune.clip_vision.finetune_vision` with the profile's steps, lr and
    layer decay, a warmup of a tenth of the steps and a cosine schedule, on batches of
    ``profile.finetune_batch`` images drawn with replacement by ``gen`` (one draw per step, so
    the builder's random stream, shared by all tasks, is consumed as by a plain loop).

    Args:
        model: the pretrained ``CLIPModel`` (left unchanged).
        head: the task's zero-shot head ``[classes, projection_dim]``.
        pixels: normalised training images ``[N, 3, H, W]``.
        labels: their labels ``[N]``.
        profile: the build profile (``finetune_steps`` / ``_batch`` / ``_lr``, ``layer_decay``).
        gen: randomness of the batches.
        progress: optional ``tqdm`` bar, updated with the loss.

    Returns:
        The fine-tuned ``CLIPVisionModel``, in eval mode.
    """
    steps = profile.finetune_steps
    return finetune_vision(
        model,
        head,
        _random_batches(pixels, labels, profile.finetune_batch, gen),
        steps=steps,
        lr=profile.finetune_lr,
        layer_decay=profile.layer_decay,
        warmup_steps=steps // 10,
        schedule="cosine",
        progress=progress,
    )


def _random_batches(
    pixels: torch.Tensor, labels: torch.Tensor, batch: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of ``batch`` indices drawn with replacement; each draw happens only when
    the batch is requested (a generator), so no randomness is consumed ahead of use."""
    while True:
        idx = torch.randint(len(pixels), (batch,), generator=gen)
        yield pixels[idx], labels[idx]


@torch.inference_mode()
def accuracy(
    model, vision, head: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor
) -> float:
    """Zero-shot top-1 accuracy of ``vision`` (inside ``model``'s projection) with ``head``."""
    correct = 0
    for i in range(0, len(pixels), 512):
        logits = zero_shot_logits(model, vision, pixels[i : i + 512], head)
        correct += int((logits.argmax(dim=-1) == labels[i : i + 512]).sum())
    return correct / len(pixels)
