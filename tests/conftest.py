"""Test-wide settings: never touch the network."""

import os
from pathlib import Path

import pytest
from clip_helpers import CLASSNAMES, IMAGE_SIZE, make_dataset_dict, tokenizer


def pytest_configure(config: pytest.Config) -> None:
    # Tests never reach the hub: make every HF library fail fast instead of retrying.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_clip_dirs(tmp_path):
    """A tiny random CLIP (full model) and three vision experts saved with save_pretrained.

    Returns ``(pretrained_dir, {name: expert_dir})``; experts differ from the base by small
    deterministic perturbations.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            eos_token_id=1,
            bos_token_id=0,
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=16,
            patch_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    base = CLIPModel(cfg)
    pre = tmp_path / "pretrained"
    base.save_pretrained(pre)
    experts = {}
    for i, name in enumerate(["a", "b", "c"]):
        vis = CLIPVisionModel.from_pretrained(pre)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in vis.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        d = tmp_path / f"expert_{name}"
        vis.save_pretrained(d)
        experts[name] = d
    return pre, experts


# Tiny random CLIP with tokenizer and image processor, and tiny image datasets on disk, shared by
# the task-pool, zero-shot and model-pool tests.
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
def vision_model(clip_dir):
    """The tiny CLIP's own vision tower (a ``CLIPVisionModel``), as a model pool would give it."""
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(clip_dir).eval()
