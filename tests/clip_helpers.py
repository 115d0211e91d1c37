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


def save_perturbed_experts(clip_dir, root, seed: int = 0, keep=None) -> dict[str, str]:
    """One vision expert per task of ``CLASSNAMES``: the tiny CLIP's vision tower plus
    ``0.05 * N(0, 1)`` noise (generator seed ``seed + i``), saved with ``save_pretrained``
    under ``root``. ``keep(name, module)`` limits the noise to the parameters of matching
    modules (default: every parameter)."""
    import torch
    from transformers import CLIPVisionModel

    out = {}
    for i, name in enumerate(CLASSNAMES):
        vision = CLIPVisionModel.from_pretrained(clip_dir)
        chosen = {
            f"{m_name}.{p_name}" if m_name else p_name
            for m_name, module in vision.named_modules()
            if keep is None or keep(m_name, module)
            for p_name, _ in module.named_parameters(recurse=False)
        }
        g = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            for key, p in vision.named_parameters():
                if key in chosen:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        vision.save_pretrained(f"{root}/{name}")
        out[name] = f"{root}/{name}"
    return out


def data_pool(clip_dir, dataset_dirs, expert_dirs, head_cache_dir):
    """A ``CLIPVisionModelPool`` over the tiny CLIP, ``expert_dirs`` and the tasks' datasets."""
    from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool

    tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
    models = {"_pretrained_": str(clip_dir), **{n: str(d) for n, d in expert_dirs.items()}}
    return CLIPVisionModelPool(models, tasks=tasks, head_cache_dir=str(head_cache_dir))
