"""Test-wide settings: never touch the network."""

import os

import pytest


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
