"""Image generators of the tiny benchmark's 8 tasks.

Each generator maps ``(n, split, rng)`` to ``(images uint8 [n, 32, 32, 3], labels int64 [n])``
with labels indexing ``TINY_TASKS[task][0]``. ``digits``, ``scenes`` and ``textures`` use real
images that ship with scikit-learn / scikit-image (no downloads); the other tasks are
procedural (:mod:`fusion_bench.tinybench.procedural`). Train and test never share a source:
``digits`` holds out a fixed quarter of the handwritten originals, ``textures`` takes test crops
from a held-out strip of each texture; ``scenes`` (which photo is this?) draws fresh crops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusion_bench.tinybench import images as I
from fusion_bench.tinybench import procedural

IMAGE_SIZE = 32
SPLITS = ("train", "validation", "test")

Generator = Callable[[int, str, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@functools.cache
def _digit_originals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten 8x8 digits in [0, 1] and a fixed 3:1 split mask."""
    from sklearn.datasets import load_digits

    d = load_digits()
    is_test = np.random.default_rng(20240229).uniform(size=len(d.target)) < 0.25
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64), is_test


def digits(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits, randomly warped, inked and noised on coloured paper."""
    imgs, targets, is_test = _digit_originals()
    pool = is_test if split == "test" else ~is_test
    labels = I.balanced_labels(rng, n, 10)
    idx = np.array([rng.choice(np.flatnonzero(pool & (targets == y))) for y in labels])
    src = torch.from_numpy(imgs[idx])[:, None]
    src = F.interpolate(src, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic").clamp(0, 1)
    s = rng.uniform(0.9, 1.1, size=n)  # >1 shrinks the digit
    r = np.deg2rad(rng.uniform(-8, 8, size=n))
    sh = rng.uniform(-0.1, 0.1, size=n)
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = s * np.cos(r), -s * np.sin(r) + sh
    theta[:, 1, 0], theta[:, 1, 1] = s * np.sin(r), s * np.cos(r)
    theta[:, :, 2] = rng.uniform(-0.08, 0.08, size=(n, 2))
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, IMAGE_SIZE, IMAGE_SIZE], False)
    ink = F.grid_sample(src, grid, align_corners=False)
    paper = I.random_colors(rng, n, sat=(0.0, 0.4), val=(0.6, 1.0)).astype(np.float32)
    pen = I.random_colors(rng, n, sat=(0.0, 0.6), val=(0.0, 0.35)).astype(np.float32)
    paper, pen = torch.from_numpy(paper), torch.from_numpy(pen)
    flip = rng.uniform(size=n) < 0.2  # some light-on-dark, like MNIST
    paper[flip], pen[flip] = pen[flip].clone(), paper[flip].clone()
    x = paper[..., None, None] * (1 - ink) + pen[..., None, None] * ink
    x = x + 0.15 * (I.smooth_noise(rng, n, IMAGE_SIZE, 4) - 0.5)
    return I.finish(x, rng, noise=(0.0, 0.05), blur_sigma=(0.0, 0.5)), labels


def _load_skimage(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    if name == "blobs":
        return skimage.data.binary_blobs(
            length=256, blob_size_fraction=0.06, volume_fraction=0.45, rng=7
        ).astype(np.float32)
    return getattr(skimage.data, name)()


# class name -> scikit-image image (all bundled with the wheel; no pooch downloads)
_SCENES = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee cup": "coffee",
    "rocket": "rocket",
    "motorcycle": "motorcycle",
    "cameraman": "camera",
    "coins": "coins",
    "clock": "clock",
    "retina": "retina",
    "horse": "horse",
}
_TEXTURES = {
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "tissue": "immunohistochemistry",
    "lettering": "page",
    "starfield": "hubble_deep_field",
    "blobs": "blobs",
    "chequered": "checkerboard",
}


@functools.cache
def _sources(kind: str) -> tuple[torch.Tensor, ...]:
    if kind == "scenes":
        return tuple(I.to_chw(_load_skimage(v), 96) for v in _SCENES.values())
    gray = []
    for v in _TEXTURES.values():
        t = I.to_chw(_load_skimage(v), 256).mean(dim=0, keepdim=True)
        gray.append(t.expand(3, -1, -1).contiguous())
    return tuple(gray)


def _by_class(labels: np.ndarray, make: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """Fill ``[n, 3, H, W]`` by calling ``make(class, count)`` once per class."""
    out = torch.empty(len(labels), 3, IMAGE_SIZE, IMAGE_SIZE)
    for c in np.unique(labels):
        sel = np.flatnonzero(labels == c)
        out[torch.from_numpy(sel)] = make(int(c), len(sel))
    return out


def scenes(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which photo is a random crop from? Crops with flips, rotation, colour jitter."""
    srcs = _sources("scenes")
    labels = I.balanced_labels(rng, n, len(srcs))
    x = _by_class(
        labels,
        lambda c, k: I.random_crops(srcs[c], k, rng, scale=(0.3, 0.9), max_rotation=12, flip=True),
    )
    gray = torch.from_numpy(rng.uniform(size=n) < 0.25)
    x[gray] = x[gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    x = x * torch.from_numpy(rng.uniform(0.75, 1.25, size=(n, 3, 1, 1)).astype(np.float32))
    return I.finish(x, rng, noise=(0.02, 0.1), blur_sigma=(0.0, 1.0), jitter=0.25), labels


def textures(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Small, rotated crops of texture-like images, coloured with a jittered class palette.

    Test crops come from the right 30% of each source, train/validation from the rest.
    """
    srcs = _sources("textures")
    labels = I.balanced_labels(rng, n, len(srcs))
    region = (0.4, 1.0, -1.0, 1.0) if split == "test" else (-1.0, 0.4, -1.0, 1.0)
    g = _by_class(
        labels,
        lambda c, k: I.random_crops(
            srcs[c], k, rng, scale=(0.2, 0.4), region=region, max_rotation=180, flip=True
        ),
    )[:, :1]
    # per-crop contrast normalisation: brightness and contrast carry no class information
    mu, sd = g.mean(dim=(2, 3), keepdim=True), g.std(dim=(2, 3), keepdim=True) + 0.02
    contrast = torch.from_numpy(rng.uniform(0.12, 0.3, size=(n, 1, 1, 1)).astype(np.float32))
    g = ((g - mu) / sd * contrast + 0.5).clamp(0, 1)
    pal = _PALETTES[labels]  # [n, 2 (dark, light), 3 (h, s, v)]
    pal = pal + rng.uniform(-1, 1, size=pal.shape) * np.array([15 / 360, 0.1, 0.1])
    free = np.isnan(pal[:, 0, 0])  # classes without a typical palette: random colours
    pal[free, 0] = np.stack([rng.uniform(size=free.sum()), rng.uniform(0, 0.6, free.sum()),
                             rng.uniform(0, 0.4, free.sum())], -1)  # fmt: skip
    pal[free, 1] = np.stack([rng.uniform(size=free.sum()), rng.uniform(0, 0.6, free.sum()),
                             rng.uniform(0.6, 1, free.sum())], -1)  # fmt: skip
    pal[..., 1:] = pal[..., 1:].clip(0, 1)
    rgb = torch.from_numpy(I.hsv_to_rgb(pal[..., 0], pal[..., 1], pal[..., 2]).astype(np.float32))
    x = rgb[:, 0, :, None, None] * (1 - g) + rgb[:, 1, :, None, None] * g
    gray = torch.from_numpy(rng.uniform(size=n) < 0.25)
    x[gray] = x[gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return I.finish(x, rng, noise=(0.0, 0.06), blur_sigma=(0.0, 0.5)), labels


# typical (dark, light) HSV colours per texture class, as in photos of them; NaN: random
_PALETTES = np.array(
    [
        [[15, 0.6, 0.3], [20, 0.5, 0.75]],  # brick
        [[100, 0.7, 0.2], [85, 0.6, 0.7]],  # grass
        [[30, 0.15, 0.3], [35, 0.15, 0.8]],  # gravel
        [[250, 0.4, 0.35], [30, 0.3, 0.9]],  # tissue (stained)
        [[0, 0.0, 0.1], [50, 0.1, 0.95]],  # lettering: ink on paper
        [[230, 0.5, 0.05], [50, 0.2, 1.0]],  # starfield
        [[np.nan] * 3] * 2,  # blobs
        [[np.nan] * 3] * 2,  # chequered
    ]
) / np.array([360, 1, 1])


GENERATORS: dict[str, Generator] = {
    "digits": digits,
    "scenes": scenes,
    "textures": textures,
    "shapes": procedural.shapes,
    "stripes": procedural.stripes,
    "colors": procedural.colors,
    "signs": procedural.signs,
    "numerals": procedural.numerals,
}


def generate(task: str, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and labels of ``task``'s ``split``, deterministic for ``seed``.

    Returns:
        ``(uint8 [n, 32, 32, 3], int64 [n])``.
    """
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS

    tasks = list(TINY_TASKS)
    rng = np.random.default_rng([seed, tasks.index(task), SPLITS.index(split)])
    images, labels = GENERATORS[task](n, split, rng)
    return images, labels.astype(np.int64)
