"""Image-making helpers shared by the tiny benchmark's generators.

Conventions: batches are float ``torch`` tensors ``[N, 3, H, W]`` in ``[0, 1]`` until
:func:`finish` turns them into ``uint8`` arrays ``[N, H, W, 3]``. All randomness comes from
the ``numpy.random.Generator`` passed in, so a generator is deterministic for its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Polygon = list[tuple[float, float]]


def to_chw(image: np.ndarray, short_side: int) -> torch.Tensor:
    """An image array (``HxW`` or ``HxWxC``, any dtype) as a float ``[3, H', W']`` tensor in
    ``[0, 1]`` whose shorter side is ``short_side`` (antialiased resize)."""
    x = np.asarray(image, dtype=np.float32)
    if image.dtype == np.uint8:
        x = x / 255.0
    elif x.max() > 1.0:
        x = x / x.max()
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(x[..., :3])).permute(2, 0, 1)[None]
    h, w = t.shape[-2:]
    f = short_side / min(h, w)
    size = (max(short_side, round(h * f)), max(short_side, round(w * f)))
    return F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def random_crops(
    src: torch.Tensor,
    n: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float],
    region: tuple[float, float, float, float] = (-1.0, 1.0, -1.0, 1.0),
    max_rotation: float = 0.0,
    flip: bool = False,
    size: int = 32,
) -> torch.Tensor:
    """``n`` rotated square crops of ``src`` (``[3, H, W]``), resampled to ``size`` pixels.

    Args:
        src: source image.
        n: number of crops.
        rng: randomness.
        scale: range of the crop side as a fraction of the source's shorter side.
        region: ``(x0, x1, y0, y1)`` in normalised ``[-1, 1]`` coordinates that crop centres
            and extents stay in (e.g. a train / test split of a texture).
        max_rotation: rotation range in degrees (uniform in ``[-max, max]``).
        flip: mirror half of the crops horizontally.
        size: output side in pixels.
    """
    h, w = src.shape[-2:]
    m = min(h, w)
    s = rng.uniform(*scale, size=n)
    sx, sy = s * m / w, s * m / h  # half-extent of the crop in normalised coordinates
    x0, x1, y0, y1 = region
    cx = x0 + sx + rng.uniform(size=n) * np.maximum(x1 - x0 - 2 * sx, 0)
    cy = y0 + sy + rng.uniform(size=n) * np.maximum(y1 - y0 - 2 * sy, 0)
    r = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=n))
    fl = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0) if flip else np.ones(n)
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = sx * np.cos(r) * fl
    theta[:, 0, 1] = -sx * np.sin(r)
    theta[:, 0, 2] = cx
    theta[:, 1, 0] = sy * np.sin(r) * fl
    theta[:, 1, 1] = sy * np.cos(r)
    theta[:, 1, 2] = cy
    out = []
    for i in range(0, n, 256):  # chunks: grid_sample materialises the expanded source
        th = torch.from_numpy(theta[i : i + 256])
        grid = F.affine_grid(th, [len(th), 3, 2 * size, 2 * size], align_corners=False)
        x = F.grid_sample(
            src[None].expand(len(th), -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="reflection",
            align_corners=False,
        )
        out.append(F.avg_pool2d(x, 2))  # sample at 2x and pool: cheap antialiasing
    return torch.cat(out)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; ``h`` in turns (``[0, 1)``), ``s``/``v`` in ``[0, 1]``.

    Returns an array of shape ``h.shape + (3,)``.
    """
    h = np.mod(h, 1.0) * 6.0
    k = np.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], axis=-1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def random_colors(rng: np.random.Generator, n: int, *, sat=(0.2, 1.0), val=(0.15, 1.0)):
    """``n`` random RGB colours ``[n, 3]`` in ``[0, 1]``."""
    return hsv_to_rgb(rng.uniform(size=n), rng.uniform(*sat, size=n), rng.uniform(*val, size=n))


def smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> torch.Tensor:
    """Low-frequency noise ``[n, 1, size, size]`` in ``[0, 1]`` (bicubic-upsampled grid)."""
    g = torch.from_numpy(rng.uniform(size=(n, 1, cells, cells)).astype(np.float32))
    return F.interpolate(g, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def backgrounds(rng: np.random.Generator, n: int, size: int = 32) -> torch.Tensor:
    """Cluttered backgrounds ``[n, 3, size, size]``: a two-colour gradient plus blotches."""
    c0 = torch.from_numpy(random_colors(rng, n).astype(np.float32))[..., None, None]
    c1 = torch.from_numpy(random_colors(rng, n).astype(np.float32))[..., None, None]
    a = rng.uniform(0, 2 * np.pi, size=n)
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    ca = torch.from_numpy(np.cos(a).astype(np.float32))[:, None, None, None]
    sa = torch.from_numpy(np.sin(a).astype(np.float32))[:, None, None, None]
    t = ((xx * ca + yy * sa) * 0.5 + 0.5).clamp(0, 1)
    blot = smooth_noise(rng, n, size, 5) - 0.5
    c2 = torch.from_numpy(random_colors(rng, n).astype(np.float32))[..., None, None]
    return (c0 * (1 - t) + c1 * t + blot * (c2 - 0.5)).clamp(0, 1)


def transform_polygon(
    poly: Sequence[tuple[float, float]],
    *,
    scale: float,
    angle: float = 0.0,
    center: tuple[float, float] = (0.0, 0.0),
    skew: float = 0.0,
) -> Polygon:
    """Skew (x += skew * y), rotate by ``angle`` degrees, scale and translate a polygon."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = []
    for x, y in poly:
        x = x - skew * y
        out.append((center[0] + scale * (c * x - s * y), center[1] + scale * (s * x + c * y)))
    return out


def regular_polygon(k: int, radius: float = 1.0, phase: float = -90.0) -> Polygon:
    """Vertices of a regular ``k``-gon of circumradius ``radius`` centred on the origin."""
    return [
        (
            radius * math.cos(math.radians(phase + 360 * i / k)),
            radius * math.sin(math.radians(phase + 360 * i / k)),
        )
        for i in range(k)
    ]


def rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """Axis-aligned rectangle as a polygon."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def raster(polys: Sequence[Polygon], size: int = 32, supersample: int = 4) -> np.ndarray:
    """Antialiased coverage mask ``[size, size]`` in ``[0, 1]`` of the union of polygons given in
    normalised coordinates (``[-1, 1]`` spans the image; y points down)."""
    from PIL import Image, ImageDraw

    big = size * supersample
    im = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(im)
    for poly in polys:
        draw.polygon([((x + 1) * big / 2, (y + 1) * big / 2) for x, y in poly], fill=255)
    im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32) / 255.0


def composite(
    bg: torch.Tensor, layers: Sequence[tuple[np.ndarray, np.ndarray]], alpha: float = 1.0
) -> torch.Tensor:
    """Paint ``(mask [H, W], rgb [3])`` layers in order over one background ``[3, H, W]``."""
    out = bg.clone()
    for mask, rgb in layers:
        m = torch.from_numpy(mask)[None] * alpha
        out = out * (1 - m) + torch.from_numpy(np.asarray(rgb, dtype=np.float32))[:, None, None] * m
    return out


def blur(x: torch.Tensor, sigma: np.ndarray) -> torch.Tensor:
    """Per-image Gaussian blur of ``[N, 3, H, W]`` with standard deviations ``sigma`` [N]."""
    r = 2
    k = torch.arange(-r, r + 1, dtype=torch.float32)
    sig = torch.from_numpy(np.maximum(sigma, 1e-3).astype(np.float32))[:, None]
    w = torch.exp(-(k[None] ** 2) / (2 * sig**2))
    w = w / w.sum(dim=1, keepdim=True)  # [N, 5]
    n, c, h, wd = x.shape
    y = F.pad(x, (r, r, r, r), mode="replicate")
    # separable: filter rows then columns, each image with its own kernel
    y = sum(w[:, i, None, None, None] * y[..., :, i : i + wd] for i in range(2 * r + 1))
    y = sum(w[:, i, None, None, None] * y[..., i : i + h, :] for i in range(2 * r + 1))
    return y


def finish(
    x: torch.Tensor,
    rng: np.random.Generator,
    *,
    noise: tuple[float, float] = (0.0, 0.08),
    blur_sigma: tuple[float, float] = (0.0, 0.8),
    jitter: float = 0.15,
) -> np.ndarray:
    """Blur, brightness/contrast jitter and Gaussian noise; returns ``uint8 [N, H, W, 3]``."""
    n = len(x)
    x = blur(x, rng.uniform(*blur_sigma, size=n))
    gain = torch.from_numpy(rng.uniform(1 - jitter, 1 + jitter, size=n).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-jitter, jitter, size=n).astype(np.float32)) / 2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, None, None, None] + mean + bias[:, None, None, None]
    sd = rng.uniform(*noise, size=(n, 1, 1, 1)).astype(np.float32)
    x = x + torch.from_numpy(sd * rng.standard_normal(size=x.shape, dtype=np.float32))
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` labels in ``range(k)``, as balanced as possible, in random order."""
    return rng.permutation(np.arange(n) % k)


def render_batch(
    labels: np.ndarray,
    rng: np.random.Generator,
    draw_one: Callable[..., list[tuple[np.ndarray, np.ndarray]]],
    size: int = 32,
) -> torch.Tensor:
    """Render one image per label: layers from ``draw_one(label, rng, background_rgb)`` over a
    cluttered background whose mean colour is ``background_rgb``."""
    bgs = backgrounds(rng, len(labels), size)
    return torch.stack(
        [
            composite(bg, draw_one(int(y), rng, bg.mean(dim=(1, 2)).numpy()))
            for bg, y in zip(bgs, labels, strict=True)
        ]
    )


def contrasting_color(rng: np.random.Generator, background: np.ndarray, gap: float = 0.3):
    """A random colour whose luminance differs from ``background``'s by at least ``gap``."""
    lum = np.array([0.299, 0.587, 0.114])
    b = float(background @ lum)
    c = random_colors(rng, 1)[0]
    for _ in range(20):
        if abs(float(c @ lum) - b) >= gap:
            break
        c = random_colors(rng, 1)[0]
    return c
