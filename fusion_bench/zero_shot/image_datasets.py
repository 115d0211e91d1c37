"""Image-classification datasets for a ``torch`` DataLoader (locations: :mod:`fusion_bench.utils.datasets`)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    import torch


def to_pil(image: Any):
    """A PIL image from what an image column may hold: PIL, encoded bytes, or an array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):  # undecoded Image feature: {"bytes": ..., "path": ...}
        if image.get("bytes") is not None:
            return Image.open(io.BytesIO(image["bytes"]))
        return Image.open(image["path"])
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image))
    import numpy as np

    return Image.fromarray(np.asarray(image))


class ImageClassificationDataset:
    """``(image_tensor, label)`` pairs of an HF dataset for a ``torch`` DataLoader.

    Only the two needed columns are read, and a whole batch is fetched with one Arrow ``take``
    (``__getitems__``, which the DataLoader prefers) instead of one row at a time.

    Args:
        ds: the HF dataset.
        image_column: column holding the images.
        label_column: column holding integer labels.
        transform: per-image callable PIL image -> tensor.
    """

    def __init__(
        self,
        ds: datasets.Dataset,
        image_column: str,
        label_column: str,
        transform: Callable[[Any], torch.Tensor],
    ) -> None:
        self.ds = ds.select_columns([image_column, label_column])
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.ds[int(index)]
        return self.transform(to_pil(row[self.image_column])), int(row[self.label_column])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        rows = self.ds[[int(i) for i in indices]]
        return [
            (self.transform(to_pil(im)), int(y))
            for im, y in zip(rows[self.image_column], rows[self.label_column], strict=True)
        ]
