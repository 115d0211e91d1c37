"""Zero-shot head cache: keys change exactly when the head could, writes are atomic."""

from __future__ import annotations

import torch

from fusion_bench.zero_shot.head_cache import ZeroShotHeadCache, head_key, text_tower_fingerprint


def _clip(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    return CLIPModel.from_pretrained(clip_dir), AutoTokenizer.from_pretrained(clip_dir)


def test_fingerprint_tracks_text_weights_only(clip_dir):
    clip, tok = _clip(clip_dir)
    fp = text_tower_fingerprint(clip, tok)
    assert fp == text_tower_fingerprint(*_clip(clip_dir))  # stable across loads
    with torch.no_grad():
        clip.vision_model.post_layernorm.weight.add_(1.0)
    assert text_tower_fingerprint(clip, tok) == fp  # the vision tower is not part of it
    with torch.no_grad():
        clip.text_projection.weight[0, 0] += 1e-3
    assert text_tower_fingerprint(clip, tok) != fp


def test_fingerprint_of_bf16_weights(clip_dir):
    clip, tok = _clip(clip_dir)
    fp32 = text_tower_fingerprint(clip, tok)
    assert text_tower_fingerprint(clip.to(torch.bfloat16), tok) != fp32


def test_key_depends_on_classnames_and_templates():
    base = head_key("fp", ["a", "b"], ["{}"])
    assert base == head_key("fp", ("a", "b"), ("{}",))
    assert base != head_key("fp", ["b", "a"], ["{}"])
    assert base != head_key("fp", ["a", "b"], ["a {}"])
    assert base != head_key("fp2", ["a", "b"], ["{}"])


def test_get_or_compute_writes_once_and_atomically(tmp_path):
    cache = ZeroShotHeadCache(tmp_path / "c")
    calls = []

    def compute():
        calls.append(1)
        return torch.eye(3)

    torch.testing.assert_close(cache.get_or_compute("k", compute, task="t"), torch.eye(3))
    torch.testing.assert_close(cache.get_or_compute("k", compute, task="t"), torch.eye(3))
    assert len(calls) == 1
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["k.safetensors"]  # no temp leftovers
