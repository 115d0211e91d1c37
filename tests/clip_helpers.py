"""Helpers shared by the task-pool tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import numpy as np

CLASSNAMES = {"a": ["cat", "dog", "bird"], "b": ["red", "green"]}
TEMPLATES = ["a photo of a {}.", "a {} thing"]
IMAGE_SIZE = 16


def tokenizer():
    """A CLIP BPE tokenizer over single byte-level characters (no merges): tokenises any text."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def make_dataset_dict(classnames: list[str], n_per_class: int = 4, seed: int = 0):
    """A ``DatasetDict`` (train/test) of 20x20 images whose brightness encodes the label."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    features = Features(
        {"image": Image(), "label": ClassLabel(names=classnames), "id": Value("int32")}
    )
    splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label in range(len(classnames)):
            for _ in range(n_per_class):
                level = 40 + 60 * label
                arr = np.clip(level + rng.integers(-5, 6, (20, 20, 3)), 0, 255).astype(np.uint8)
                images.append(PILImage.fromarray(arr))
                labels.append(label)
        splits[split] = Dataset.from_dict(
            {"image": images, "label": labels, "id": list(range(len(labels)))}, features=features
        )
    return DatasetDict(splits)


def task_cfg(dataset, classnames, **extra) -> dict:
    """One task entry as a config would give it."""
    return {
        "dataset": str(dataset),
        "split": "test",
        "classnames": list(classnames),
        "templates": list(TEMPLATES),
        "metadata": {"version": 1},
        **extra,
    }
