"""Fixtures of the task-pool tests: a tiny random CLIP with tokenizer and image processor, and
tiny image-classification datasets on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from clip_helpers import CLASSNAMES, IMAGE_SIZE, make_dataset_dict, task_cfg, tokenizer


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """A full tiny random CLIP + tokenizer + ``CLIPImageProcessor`` saved with save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    tok = tokenizer()
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=tok.bos_token_id,
            # pooling takes the hidden state at the first end token: it must be the tokenizer's
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def dataset_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tasks ``a`` (3 classes) and ``b`` (2 classes) saved with ``save_to_disk``."""
    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for i, (name, classnames) in enumerate(CLASSNAMES.items()):
        make_dataset_dict(classnames, seed=i).save_to_disk(root / name)
        out[name] = root / name
    return out


@pytest.fixture
def make_pool(clip_dir, dataset_dirs, tmp_path):
    """Factory of ``CLIPZeroShotTaskPool`` on the tiny CLIP and datasets (fresh head cache)."""
    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    def make(tasks: dict | None = None, **kwargs):
        if tasks is None:
            tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
        kwargs.setdefault("batch_size", 4)
        kwargs.setdefault("head_cache_dir", str(tmp_path / "heads"))
        return CLIPZeroShotTaskPool(clip_model=str(clip_dir), tasks=tasks, **kwargs)

    return make


@pytest.fixture
def vision_model(clip_dir):
    """The tiny CLIP's own vision tower (a ``CLIPVisionModel``), as a model pool would give it."""
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(clip_dir).eval()
