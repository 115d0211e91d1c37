"""Class names and prompt templates of the offline tiny 8-task benchmark.

The tiny benchmark (:mod:`fusion_bench.tinybench`) mirrors the task-arithmetic suite with
locally generated data: ``digits`` (scikit-learn's handwritten digits, ~MNIST), ``scenes``
(crops of scikit-image's photos, ~SUN397), ``textures`` (crops of scikit-image's texture-like
images, ~DTD), ``shapes`` (~RESISC45 / EuroSAT: what is depicted), ``stripes`` (grating
orientation), ``colors`` (dominant colour), ``signs`` (traffic-sign-like symbols, ~GTSRB) and
``numerals`` (seven-segment numbers on clutter, ~SVHN).

Class names are distinct across tasks (a name identifies its task), so the shared text tower
has one embedding per class. Templates follow CLIP's style (Radford et al., arXiv 2103.00020).
"""

from __future__ import annotations

_PHOTO = ["a photo of a {}.", "a blurry photo of a {}.", "a cropped photo of the {}."]

TINY_TASKS: dict[str, tuple[list[str], list[str]]] = {
    "digits": (
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
        [
            'a photo of the number: "{}".',
            "a handwritten digit {}.",
            "a scan of a handwritten {}.",
        ],
    ),
    "scenes": (
        [
            "astronaut",
            "cat",
            "coffee cup",
            "rocket",
            "motorcycle",
            "cameraman",
            "coins",
            "clock",
            "retina",
            "horse",
        ],
        [*_PHOTO, "a close-up photo of the {}.", "a low resolution photo of a {}."],
    ),
    "textures": (
        [
            "brick",
            "grass",
            "gravel",
            "tissue",
            "lettering",
            "starfield",
            "blobs",
            "chequered",
        ],
        [
            "a photo of a {} texture.",
            "a photo of a {} pattern.",
            "a photo of a {} surface.",
            "a close-up photo of {}.",
        ],
    ),
    "shapes": (
        ["circle", "square", "triangle", "star", "cross", "hexagon", "crescent", "arrow"],
        ["a drawing of a {}.", "a photo of a {} shape.", "a {} on a cluttered background."],
    ),
    "stripes": (
        [
            "horizontal stripes",
            "shallow falling stripes",
            "falling diagonal stripes",
            "steep falling stripes",
            "vertical stripes",
            "steep rising stripes",
            "rising diagonal stripes",
            "shallow rising stripes",
        ],
        ["a pattern of {}.", "a photo of {}.", "a grating of {}."],
    ),
    "colors": (
        ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"],
        [
            "a photo of something {}.",
            "a mostly {} image.",
            "a photo of the colour {}.",
        ],
    ),
    "signs": (
        [
            "stop sign",
            "yield sign",
            "warning sign",
            "speed limit sign",
            "parking sign",
            "keep right sign",
            "priority road sign",
            "no entry sign",
        ],
        [
            'a zoomed in photo of a "{}" traffic sign.',
            'a centered photo of a "{}" traffic sign.',
            'a close up photo of a "{}" traffic sign.',
        ],
    ),
    "numerals": (
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        [
            'a photo of the display number: "{}".',
            "a seven segment display showing {}.",
            "a street photo of the number {}.",
        ],
    ),
}
"""Task name -> (class names in label order, prompt templates with one ``{}``)."""
