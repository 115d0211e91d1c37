"""The offline tiny 8-task CLIP benchmark (DESIGN §5), built locally on first use.

A tiny CLIP is pretrained contrastively on the union of 8 small image tasks, then one vision
tower per task is fine-tuned against the frozen zero-shot head of that task: the recipe of the
real ``tanganke/clip-vit-*_<task>`` experts, scaled down to minutes on a CPU. The build is
stored in the same formats as the real benchmark, so every model pool, method and task pool
runs on it unchanged::

    <cache_dir()>/tiny_clip/<profile>-seed<seed>-v<BUILD_VERSION>/
        pretrained/          CLIPModel.save_pretrained + tokenizer + CLIPImageProcessor
        experts/<task>/      CLIPVisionModel.save_pretrained, one per task
        datasets/<task>/     DatasetDict.save_to_disk: train / validation / test, image + label
        BUILD_INFO.json      profile, seed, version, parameters, timings, accuracies (written last)

Configs point at it with ``tiny://<profile>/<relative path>`` (see :mod:`fusion_bench.utils.hub`).
Importing this module is cheap; torch / transformers / datasets load only when building.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusion_bench.tinybench._cache import TinyBenchmark

BUILD_VERSION = 3
"""Bump whenever the recipe (data, model, training) changes, so old caches are not reused."""

TASKS = ("digits", "scenes", "textures", "shapes", "stripes", "colors", "signs", "numerals")
"""Task names, in benchmark order (their class names are in ``TINY_TASKS``)."""

IMAGE_SIZE = 32


@dataclass(frozen=True)
class Profile:
    """Sizes and training hyperparameters of a build."""

    n_train: int
    """Train images per task (pretraining uses the union over tasks)."""
    n_val: int
    n_test: int
    hidden: int
    """Width of both towers."""
    mlp_ratio: int
    """MLP width as a multiple of ``hidden``."""
    layers: int
    heads: int
    patch: int
    projection_dim: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    caption_noise: float
    """Fraction of pretraining captions naming a random class of the same task."""
    confused_fraction: float
    """Fraction of each task's classes whose pretraining captions often name another class of
    the task (see :func:`~fusion_bench.tinybench.train.confused_captions`)."""
    confusion_rate: float
    """Probability that a pretraining caption of a confused class names the other class (else
    its own): above 0.5 the zero-shot head prefers the wrong class, by a margin that shrinks as
    the rate nears 0.5."""
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    layer_decay: float
    """Fine-tuning lr factor per layer below the top (1.0: the same lr everywhere)."""


PROFILES: dict[str, Profile] = {
    "default": Profile(
        n_train=3000,
        n_val=300,
        n_test=600,
        hidden=64,
        mlp_ratio=4,
        layers=2,
        heads=4,
        patch=8,
        projection_dim=64,
        pretrain_steps=1000,
        pretrain_batch=256,
        pretrain_lr=2e-3,
        caption_noise=0.0,
        confused_fraction=0.5,
        confusion_rate=0.6,
        finetune_steps=300,
        finetune_batch=64,
        finetune_lr=3e-3,
        layer_decay=0.2,
    ),
    "smoke": Profile(
        n_train=400,
        n_val=50,
        n_test=100,
        hidden=32,
        mlp_ratio=4,
        layers=1,
        heads=2,
        patch=8,
        projection_dim=32,
        pretrain_steps=60,
        pretrain_batch=128,
        pretrain_lr=3e-3,
        caption_noise=0.0,
        confused_fraction=0.3,
        confusion_rate=0.6,
        finetune_steps=40,
        finetune_batch=64,
        finetune_lr=2e-3,
        layer_decay=0.5,
    ),
}
"""Build profiles: ``default`` (the real default job) and ``smoke`` (fast, for tests)."""


def _needed(root: Path) -> list[Path]:
    needed = [root / "pretrained" / "config.json"]
    needed += [root / "experts" / t / "config.json" for t in TASKS]
    return needed + [root / "datasets" / t / "dataset_dict.json" for t in TASKS]


BENCHMARK = TinyBenchmark(
    name="tiny_clip",
    what="tiny CLIP benchmark",
    version=BUILD_VERSION,
    profiles=PROFILES,
    needed=_needed,
    builder="fusion_bench.tinybench.build",
)
"""The cache layout and builder; the functions below are its methods."""

build_root = BENCHMARK.root
is_complete = BENCHMARK.is_complete
ensure_built = BENCHMARK.ensure_built
