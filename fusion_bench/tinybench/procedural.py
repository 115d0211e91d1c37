"""Procedural tasks of the tiny benchmark: shapes, stripes, colours, signs, numerals.

Same interface as :mod:`fusion_bench.tinybench.data`: ``(n, split, rng) -> (uint8 images,
labels)``. Nuisances (position, scale, rotation, colours, clutter, blur, noise) are random so
that no single pixel statistic gives the class away.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fusion_bench.tinybench import images as I

SIZE = 32


# ---------------------------------------------------------------------------------- shapes
def _star(k: int = 5, inner: float = 0.45) -> I.Polygon:
    return [
        (
            (1.0 if i % 2 == 0 else inner) * math.cos(math.radians(-90 + 180 * i / k)),
            (1.0 if i % 2 == 0 else inner) * math.sin(math.radians(-90 + 180 * i / k)),
        )
        for i in range(2 * k)
    ]


_CROSS = [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
          (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]  # fmt: skip
_ARROW = [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)]
_CIRCLE = I.regular_polygon(40)


def _crescent(scale: float, angle: float, center: tuple[float, float]) -> list[I.Polygon]:
    disc = I.transform_polygon(_CIRCLE, scale=scale, center=center)
    a = math.radians(angle)
    bite_c = (center[0] + 0.45 * scale * math.cos(a), center[1] + 0.45 * scale * math.sin(a))
    return [disc, I.transform_polygon(_CIRCLE, scale=0.85 * scale, center=bite_c)]


_SHAPES = [
    _CIRCLE,
    I.regular_polygon(4, math.sqrt(2) * 0.8, 45),
    I.regular_polygon(3, 1.1),
    _star(),
    _CROSS,
    I.regular_polygon(6),
    None,  # crescent: a disc with a bite, drawn specially
    _ARROW,
]


def shapes(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A filled shape at a random place, size, rotation and colour over clutter."""
    labels = I.balanced_labels(rng, n, len(_SHAPES))

    def draw(y: int, rng: np.random.Generator, bg: np.ndarray):
        scale, angle = rng.uniform(0.65, 0.85), rng.uniform(-10, 10)
        center = tuple(rng.uniform(-0.1, 0.1, size=2))
        layers = _clutter(rng, (0, 2))
        if _SHAPES[y] is None:
            disc, bite = _crescent(scale, angle, center)
            mask = np.clip(I.raster([disc]) - I.raster([bite]), 0, 1)
        else:
            mask = I.raster(
                [I.transform_polygon(_SHAPES[y], scale=scale, angle=angle, center=center)]
            )
        return [*layers, (mask, I.contrasting_color(rng, bg))]

    return I.finish(I.render_batch(labels, rng, draw), rng), labels


def _clutter(rng: np.random.Generator, k: tuple[int, int] = (1, 4)) -> list:
    """A few thin random strokes (as layers) so the background is not uniform."""
    layers = []
    for _ in range(rng.integers(*k)):
        (x0, y0), (x1, y1) = rng.uniform(-1, 1, size=(2, 2))
        nx, ny = y0 - y1, x1 - x0
        norm = math.hypot(nx, ny) + 1e-6
        w = rng.uniform(0.02, 0.06)
        nx, ny = w * nx / norm, w * ny / norm
        poly = [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)]
        layers.append((I.raster([poly]) * rng.uniform(0.3, 0.8), I.random_colors(rng, 1)[0]))
    return layers


# --------------------------------------------------------------------------------- stripes
def stripes(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gratings whose stripes run at ``label * 22.5`` degrees (+-6), random period and colours."""
    labels = I.balanced_labels(rng, n, 8)
    ang = np.deg2rad(labels * 22.5 + rng.uniform(-4, 4, size=n))
    period = rng.uniform(5.5, 9.0, size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    sharp = rng.uniform(1.0, 6.0, size=n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    v = (-np.sin(ang))[:, None, None] * xx + np.cos(ang)[:, None, None] * yy
    w = np.sin(2 * np.pi * v / period[:, None, None] + phase[:, None, None])
    t = torch.from_numpy(((np.tanh(sharp[:, None, None] * w) / np.tanh(sharp)[:, None, None]) * 0.5 + 0.5).astype(np.float32))[:, None]  # fmt: skip
    c0 = torch.from_numpy(I.random_colors(rng, n).astype(np.float32))[..., None, None]
    c1 = torch.from_numpy(I.random_colors(rng, n).astype(np.float32))[..., None, None]
    contrast = torch.from_numpy(rng.uniform(0.5, 1.0, size=(n, 1, 1, 1)).astype(np.float32))
    x = c0 * (1 - t) + c1 * t
    x = x * contrast + (1 - contrast) * x.mean(dim=(2, 3), keepdim=True)
    # an occluding blob in some images
    occ = (I.smooth_noise(rng, n, SIZE, 3) > 0.75).float() * torch.from_numpy(
        (rng.uniform(size=(n, 1, 1, 1)) < 0.25).astype(np.float32)
    )
    x = x * (1 - occ) + occ * torch.from_numpy(I.random_colors(rng, n).astype(np.float32))[..., None, None]  # fmt: skip
    return I.finish(x, rng, noise=(0.03, 0.15)), labels


# ---------------------------------------------------------------------------------- colors
_HUES = np.array([0, 28, 55, 120, 185, 230, 280, 325]) / 360.0  # label order of TINY_TASKS


def colors(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blobby images where the labelled hue covers most (55-85%) of the area."""
    labels = I.balanced_labels(rng, n, len(_HUES))
    k = len(_HUES)
    other = (labels + rng.integers(1, k, size=(2, n))) % k  # two distractor hues

    def hue_sv(lbl):
        h = _HUES[lbl] + rng.uniform(-12, 12, size=n) / 360
        pink = lbl == 7
        s = np.where(pink, rng.uniform(0.3, 0.6, size=n), rng.uniform(0.55, 1.0, size=n))
        v = np.where(pink, rng.uniform(0.75, 1.0, size=n), rng.uniform(0.45, 1.0, size=n))
        return torch.from_numpy(I.hsv_to_rgb(h, s, v).astype(np.float32))[..., None, None]

    field = I.smooth_noise(rng, n, SIZE, 5)
    q = torch.from_numpy(rng.uniform(0.55, 0.85, size=n).astype(np.float32))
    flat = field.flatten(1).sort(dim=1).values
    thr = flat.gather(1, (q * (flat.shape[1] - 1)).long()[:, None])[:, 0]
    main = (field <= thr[:, None, None, None]).float()
    split2 = (I.smooth_noise(rng, n, SIZE, 4) > 0.5).float()
    x = main * hue_sv(labels) + (1 - main) * (
        split2 * hue_sv(other[0]) + (1 - split2) * hue_sv(other[1])
    )
    shade = 0.7 + 0.6 * I.smooth_noise(rng, n, SIZE, 3)
    return I.finish(x * shade, rng, noise=(0.02, 0.1), jitter=0.1), labels


# ----------------------------------------------------------------------------------- signs
_RED, _WHITE, _BLACK = (0.8, 0.1, 0.1), (0.95, 0.95, 0.95), (0.05, 0.05, 0.05)
_BLUE, _YELLOW = (0.1, 0.3, 0.8), (0.95, 0.8, 0.1)
_OCT = I.regular_polygon(8, 1.0, 22.5)
_TRI_UP = I.regular_polygon(3, 1.15, -90)
_TRI_DOWN = I.regular_polygon(3, 1.15, 90)
_DIAMOND = I.regular_polygon(4, 1.0, 0)


def _scaled(p: I.Polygon, s: float, dx: float = 0.0, dy: float = 0.0) -> I.Polygon:
    return [(s * x + dx, s * y + dy) for x, y in p]


def _sign_layers(y: int, rng: np.random.Generator) -> list[tuple[list[I.Polygon], tuple]]:
    """Layers ``(polygons in a unit frame, colour)`` of sign class ``y``."""
    if y == 0:  # stop: red octagon, white rim, white lettering blocks
        letters = [I.rect(-0.6 + 0.32 * i, -0.2, -0.4 + 0.32 * i, 0.2) for i in range(4)]
        return [([_OCT], _WHITE), ([_scaled(_OCT, 0.88)], _RED), (letters, _WHITE)]
    if y == 1:  # yield: red-rimmed white inverted triangle
        return [([_TRI_DOWN], _RED), ([_scaled(_TRI_DOWN, 0.6, 0, -0.05)], _WHITE)]
    if y == 2:  # warning: red-rimmed white triangle with a black exclamation mark
        mark = [I.rect(-0.08, -0.35, 0.08, 0.25), I.rect(-0.08, 0.35, 0.08, 0.5)]
        return [([_TRI_UP], _RED), ([_scaled(_TRI_UP, 0.6, 0, 0.05)], _WHITE), (mark, _BLACK)]
    if y == 3:  # speed limit: red ring, white disc, two black seven-segment digits
        digits = rng.choice([3, 5, 6, 7, 8])
        text = seven_segment(int(digits), -0.28, 0.0, 0.45) + seven_segment(0, 0.28, 0.0, 0.45)
        return [([_CIRCLE], _RED), ([_scaled(_CIRCLE, 0.75)], _WHITE), (text, _BLACK)]
    if y == 4:  # parking: blue square, white P
        p = [I.rect(-0.35, -0.6, -0.15, 0.6), I.rect(-0.35, -0.6, 0.35, -0.42),
             I.rect(-0.35, -0.05, 0.35, 0.13), I.rect(0.17, -0.6, 0.35, 0.13)]  # fmt: skip
        return [([I.rect(-0.9, -0.9, 0.9, 0.9)], _BLUE), (p, _WHITE)]
    if y == 5:  # keep right: blue disc, white arrow pointing down-right
        arrow = I.transform_polygon(_ARROW, scale=0.6, angle=45)
        return [([_CIRCLE], _BLUE), ([arrow], _WHITE)]
    if y == 6:  # priority road: white diamond, yellow inner diamond
        return [([_DIAMOND], _WHITE), ([_scaled(_DIAMOND, 0.65)], _YELLOW)]
    # no entry: red disc, white horizontal bar
    return [([_CIRCLE], _RED), ([I.rect(-0.7, -0.17, 0.7, 0.17)], _WHITE)]


def signs(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Traffic-sign-like colour + shape + symbol combinations on cluttered backgrounds."""
    labels = I.balanced_labels(rng, n, 8)

    def draw(y: int, rng: np.random.Generator, bg: np.ndarray):
        scale, angle = rng.uniform(0.5, 0.85), rng.uniform(-12, 12)
        center = tuple(rng.uniform(-0.95 + scale, 0.95 - scale, size=2))
        tint = rng.uniform(0.7, 1.15, size=3)
        layers = _clutter(rng)
        if rng.uniform() < 0.5:  # a grey post below the sign
            post = I.rect(center[0] - 0.06, center[1], center[0] + 0.06, 1.0)
            layers.append((I.raster([post]), np.full(3, rng.uniform(0.3, 0.7))))
        for polys, rgb in _sign_layers(y, rng):
            tp = [I.transform_polygon(p, scale=scale, angle=angle, center=center) for p in polys]
            layers.append((I.raster(tp), np.clip(np.array(rgb) * tint, 0, 1)))
        return layers

    return I.finish(I.render_batch(labels, rng, draw), rng, blur_sigma=(0.0, 1.0)), labels


# -------------------------------------------------------------------------------- numerals
# segments a..g of a seven-segment digit in a frame of width 1, height 2 (centre at origin)
_SEG = {
    "a": I.rect(-0.4, -1.0, 0.4, -0.8),
    "b": I.rect(0.4, -0.9, 0.6, -0.1),
    "c": I.rect(0.4, 0.1, 0.6, 0.9),
    "d": I.rect(-0.4, 0.8, 0.4, 1.0),
    "e": I.rect(-0.6, 0.1, -0.4, 0.9),
    "f": I.rect(-0.6, -0.9, -0.4, -0.1),
    "g": I.rect(-0.4, -0.1, 0.4, 0.1),
}
_DIGIT_SEGS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg",
               "abcdfg"]  # fmt: skip


def seven_segment(
    d: int, cx: float, cy: float, scale: float, skew: float = 0.0, off: bool = False
) -> list[I.Polygon]:
    """Polygons of digit ``d`` (or of its unlit segments if ``off``) at ``(cx, cy)``."""
    segs = [s for s in "abcdefg" if (s in _DIGIT_SEGS[d]) != off]
    return [
        I.transform_polygon(_SEG[s], scale=scale * 0.5, center=(cx, cy), skew=skew) for s in segs
    ]


def numerals(n: int, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A centred seven-segment digit, with cut-off neighbours, faint unlit segments, clutter."""
    labels = I.balanced_labels(rng, n, 10)

    def draw(y: int, rng: np.random.Generator, bg: np.ndarray):
        scale = rng.uniform(0.75, 0.95)
        skew = rng.uniform(0.0, 0.15)
        cx, cy = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
        color = I.contrasting_color(rng, bg, 0.35)
        layers = _clutter(rng, (0, 3))
        pitch = scale * rng.uniform(0.85, 1.0)
        for j, x in enumerate((cx - pitch, cx, cx + pitch)):
            d = y if j == 1 else int(rng.integers(10))
            if j != 1 and rng.uniform() < 0.75:
                continue
            layers.append((I.raster(seven_segment(d, x, cy, scale, skew, off=True)) * 0.1, color))
            layers.append((I.raster(seven_segment(d, x, cy, scale, skew)), color))
        return layers

    return I.finish(I.render_batch(labels, rng, draw), rng, blur_sigma=(0.0, 1.0)), labels
