"""Converting Hugging Face CLIP weights to open_clip, and the tiny open_clip benchmark.

The conversion tests use random tiny configs (seconds, nothing is built). The last test converts
the ``smoke`` build of the tiny CLIP benchmark (integration: it reuses a complete smoke build
of the current cache if there is one, else builds one in a temporary cache in about a minute).
"""

from __future__ import annotations

import json

import pytest
import torch

from fusion_bench.tinybench.openclip import (
    arch_name,
    open_clip_model_config,
    open_clip_state_dict,
    open_clip_visual_state_dict,
)

CONTEXT = 12
PAD, BOS, EOS = 0, 2, 3


def _config(act: str = "quick_gelu", eos: int = EOS, **vision_overrides):
    from transformers import CLIPConfig

    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_act=act,
    )
    return CLIPConfig(
        text_config=dict(
            common,
            vocab_size=40,
            max_position_embeddings=CONTEXT,
            eos_token_id=eos,
            pad_token_id=PAD,
            bos_token_id=BOS,
        ),
        vision_config=dict(common, image_size=16, patch_size=8, **vision_overrides),
        projection_dim=16,
    )


def _hf_clip(config, seed: int = 0):
    """A random ``CLIPModel`` with every parameter moved off its initialisation (layer norms
    are no longer 1 / 0, biases not 0, ``logit_scale`` not the default), so that a swapped or
    missing mapping cannot pass by accident."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        model.logit_scale.fill_(1.234)
    return model


def _open_clip_model(tmp_path, model_cfg: dict, suffix: str = ""):
    """An open_clip model of ``model_cfg``, registered under a name unique to the test
    (``open_clip.add_model_config`` fills a process-wide registry)."""
    import open_clip

    name = f"fbtest-{tmp_path.name}{suffix}"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(model_cfg), encoding="utf-8")
    open_clip.add_model_config(path)
    return open_clip.create_model(name).eval()


def _pooled(out) -> torch.Tensor:
    """Features from ``get_*_features`` (a tensor, or in transformers 5 an output whose
    ``pooler_output`` holds the projected features)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _token_ids(eos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(hf_ids, hf_mask, open_clip_ids)``: right-padded with ``PAD``, the HF batch to its
    longest sequence, the open_clip one to ``CONTEXT``; first ``eos`` at different positions
    (one sequence also has a later second ``eos``, one fills the whole context)."""
    seqs = [
        [BOS, 5, eos],
        [BOS, 7, 8, 9, 10, 11, eos],
        [BOS, 12, eos, 13, eos],
        [BOS, *range(14, 14 + CONTEXT - 2), eos],
        [BOS, 30, 31, 32, eos],
    ]
    longest = max(map(len, seqs))

    def pad(n: int) -> torch.Tensor:
        return torch.tensor([s + [PAD] * (n - len(s)) for s in seqs])

    hf_ids = pad(longest)
    mask = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in seqs])
    return hf_ids, mask, pad(CONTEXT)


@pytest.mark.parametrize(
    ("act", "eos"), [("quick_gelu", EOS), ("gelu", EOS), ("quick_gelu", 2)], ids=str
)
def test_converted_clip_computes_the_same_features(tmp_path, act, eos):
    config = _config(act, eos)
    hf = _hf_clip(config)
    model_cfg = open_clip_model_config(config)
    assert model_cfg["quick_gelu"] is (act == "quick_gelu")
    model = _open_clip_model(tmp_path, model_cfg)
    converted = open_clip_state_dict(hf.state_dict())
    assert converted.keys() == model.state_dict().keys()
    model.load_state_dict(converted, strict=True)

    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    hf_ids, mask, oc_ids = _token_ids(eos)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(pixels), _pooled(hf.get_image_features(pixel_values=pixels))
        )
        hf_text = _pooled(hf.get_text_features(input_ids=hf_ids, attention_mask=mask))
        torch.testing.assert_close(model.encode_text(oc_ids), hf_text)
        torch.testing.assert_close(model.logit_scale, hf.logit_scale)
        hf_logits = hf(input_ids=hf_ids, attention_mask=mask, pixel_values=pixels)
        torch.testing.assert_close(model.get_logits(pixels, oc_ids)[0], hf_logits.logits_per_image)
    # the features depend on where the sequences end: equal features are not a coincidence
    assert not torch.allclose(hf_text[0], hf_text[1])


def test_model_config_fields_and_pooling():
    cfg = open_clip_model_config(_config())
    assert cfg == {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 16,
            "layers": 2,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": CONTEXT,
            "vocab_size": 40,
            "width": 32,
            "heads": 2,
            "layers": 2,
            "mlp_ratio": 2.0,
            "pool_type": "eos",
            "eos_id": EOS,
        },
    }
    legacy = open_clip_model_config(_config(eos=2))["text_cfg"]
    assert legacy["pool_type"] == "argmax" and "eos_id" not in legacy
    json.dumps(cfg)  # the config is written as json


def test_visual_only_conversion_loads_strictly_into_visual(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import CLIPVisionModel

    config = _config()
    hf = _hf_clip(config)
    vision = CLIPVisionModel(config.vision_config).eval()  # an expert's layout
    vision.load_state_dict(hf.vision_model.state_dict())
    converted = open_clip_visual_state_dict(vision.state_dict(), hf.visual_projection.weight)
    assert all(t.is_contiguous() for t in converted.values())
    assert converted["proj"].data_ptr() != hf.visual_projection.weight.data_ptr()
    save_file(converted, str(tmp_path / "expert.safetensors"))  # refuses views / shared memory

    model = _open_clip_model(tmp_path, open_clip_model_config(config))
    model.visual.load_state_dict(load_file(str(tmp_path / "expert.safetensors")), strict=True)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf.visual_projection(vision(pixel_values=pixels).pooler_output)
        torch.testing.assert_close(model.encode_image(pixels), expected)


def test_vision_state_dicts_of_transformers_4_and_5_layouts_convert_alike():
    from transformers import CLIPVisionModel

    config = _config()
    hf = _hf_clip(config)
    proj = hf.visual_projection.weight
    top_level = CLIPVisionModel(config.vision_config).state_dict()  # the installed layout
    assert top_level.keys() == hf.vision_model.state_dict().keys()
    new = open_clip_visual_state_dict(hf.vision_model.state_dict(), proj)
    old = open_clip_visual_state_dict(
        {f"vision_model.{k}": v for k, v in hf.vision_model.state_dict().items()}, proj
    )
    assert new.keys() == old.keys()
    for k in new:
        torch.testing.assert_close(new[k], old[k], rtol=0, atol=0)


def test_whole_conversion_holds_the_visual_conversion():
    hf = _hf_clip(_config())
    state = hf.state_dict()
    whole = open_clip_state_dict(state)
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    visual = open_clip_visual_state_dict(vision, state["visual_projection.weight"])
    assert {k for k in whole if k.startswith("visual.")} == {f"visual.{k}" for k in visual}
    for k, v in visual.items():
        torch.testing.assert_close(whole[f"visual.{k}"], v, rtol=0, atol=0)
    torch.testing.assert_close(whole["text_projection"], state["text_projection.weight"].T)


def test_bad_keys_raise_naming_the_key():
    hf = _hf_clip(_config())
    state = hf.state_dict()
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    proj = state["visual_projection.weight"]

    with pytest.raises(ValueError, match="vision_model.encoder.layers.0.extra.weight"):
        open_clip_visual_state_dict(
            {**vision, "vision_model.encoder.layers.0.extra.weight": proj}, proj
        )
    missing = "vision_model.encoder.layers.1.self_attn.k_proj.bias"
    with pytest.raises(ValueError, match=missing):
        open_clip_visual_state_dict({k: v for k, v in vision.items() if k != missing}, proj)
    mixed = {**vision, "pre_layrnorm.weight": vision["vision_model.pre_layrnorm.weight"]}
    with pytest.raises(ValueError, match="unexpected key 'pre_layrnorm.weight'"):
        open_clip_visual_state_dict(mixed, proj)
    with pytest.raises(ValueError, match="unexpected key 'model.vision_model.embeddings"):
        open_clip_visual_state_dict({f"model.{k}": v for k, v in vision.items()}, proj)
    with pytest.raises(ValueError, match="visual_projection_weight"):
        open_clip_visual_state_dict(vision, proj.T)
    with pytest.raises(ValueError, match="missing key 'text_projection.weight'"):
        open_clip_state_dict({k: v for k, v in state.items() if k != "text_projection.weight"})
    with pytest.raises(ValueError, match="unexpected key 'text_model.pooler.weight'"):
        open_clip_state_dict({**state, "text_model.pooler.weight": proj})
    # an old transformers' persistent position_ids buffer is not a weight: dropped
    with_ids = {**state, "text_model.embeddings.position_ids": torch.arange(CONTEXT)[None]}
    assert open_clip_state_dict(with_ids).keys() == open_clip_state_dict(state).keys()


def test_unconvertible_configs_raise():
    config = _config()
    config.vision_config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="activations differ"):
        open_clip_model_config(config)
    with pytest.raises(ValueError, match="not supported"):
        open_clip_model_config(_config("relu"))
    config = _config()
    config.text_config.layer_norm_eps = 1e-6
    with pytest.raises(ValueError, match="layer_norm_eps"):
        open_clip_model_config(config)
    with pytest.raises(ValueError, match="channels"):
        open_clip_model_config(_config(num_channels=1))


def test_tiny_mean_std_are_open_clip_defaults(tmp_path):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from fusion_bench.tinybench.train import CLIP_MEAN, CLIP_STD

    assert tuple(CLIP_MEAN) == OPENAI_DATASET_MEAN and tuple(CLIP_STD) == OPENAI_DATASET_STD
    # so open_clip's preprocessing of a converted model needs no preprocess config
    model = _open_clip_model(tmp_path, open_clip_model_config(_config()))
    assert tuple(model.visual.preprocess_cfg["mean"]) == tuple(CLIP_MEAN)
    assert tuple(model.visual.preprocess_cfg["std"]) == tuple(CLIP_STD)
    assert tuple(model.visual.preprocess_cfg["size"]) == (16, 16)


def test_benchmark_layout_scheme_and_cheap_import(tmp_path, monkeypatch):
    import subprocess
    import sys

    from fusion_bench.tinybench import PROFILES, TASKS
    from fusion_bench.tinybench import openclip as oc
    from fusion_bench.utils.hub import TINY_BENCHMARKS

    assert TINY_BENCHMARKS["tiny-openclip://"] == "fusion_bench.tinybench.openclip"
    assert oc.BENCHMARK.profiles is PROFILES and oc.BENCHMARK.name == "tiny_openclip"
    assert arch_name("smoke") == "fb-tiny-smoke"
    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    root = oc.build_root("smoke", seed=3)
    assert root.parent == tmp_path / "tiny_openclip" and not oc.is_complete(root)
    needed = {p.relative_to(root).as_posix() for p in oc._needed(root)}
    assert {"fb-tiny-smoke.json", "pretrained.safetensors"} <= needed
    assert {f"experts/{t}.safetensors" for t in TASKS} <= needed

    code = (
        "import sys, fusion_bench.tinybench.openclip; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'open_clip')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def smoke_cache(tmp_path, monkeypatch):
    """A temporary cache; a complete smoke build of the tiny CLIP benchmark in the current cache
    is linked into it (read only), so that it is converted, not rebuilt."""
    from fusion_bench.tinybench import build_root, is_complete

    current = build_root("smoke", seed=0)
    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path / "cache"))
    if is_complete(current):
        link = build_root("smoke", seed=0)
        link.parent.mkdir(parents=True)
        link.symlink_to(current, target_is_directory=True)
    return tmp_path / "cache"


@pytest.mark.integration
def test_smoke_build_matches_the_hf_smoke_build(smoke_cache):
    from pathlib import Path

    import datasets
    import open_clip
    from open_clip.tokenizer import HFTokenizer
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, CLIPVisionModel

    from fusion_bench.models.clip_zero_shot import image_transform
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS
    from fusion_bench.tinybench import TASKS
    from fusion_bench.tinybench.openclip import VERSION, ensure_built, is_complete

    root = ensure_built("smoke", seed=0)
    assert root.is_relative_to(smoke_cache) and is_complete(root)
    assert ensure_built("smoke", seed=0) == root  # cached: no rebuild
    info = json.loads((root / "BUILD_INFO.json").read_text())
    arch = arch_name("smoke")
    assert info["arch"] == arch and info["version"] == VERSION and info["profile"] == "smoke"
    assert sorted(p.stem for p in (root / "experts").glob("*.safetensors")) == sorted(TASKS)
    hf_root = Path(info["source"])
    source_info = json.loads((hf_root / "BUILD_INFO.json").read_text())
    copied = root / f"SOURCE-tiny_clip-v{source_info['version']}.json"
    assert json.loads(copied.read_text()) == source_info  # accuracies of the HF build

    open_clip.add_model_config(root / f"{arch}.json")
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch,
        pretrained=str(root / "pretrained.safetensors"),  # loads with strict=True
    )
    model.eval()
    model.load_state_dict(load_file(str(root / "pretrained.safetensors")), strict=True)
    clip = CLIPModel.from_pretrained(hf_root / "pretrained").eval()
    hf_transform = image_transform(AutoImageProcessor.from_pretrained(hf_root / "pretrained"))

    # text: the tokenizer through open_clip's HFTokenizer, padded to the context length
    ctx = model.context_length
    tokenizer = HFTokenizer(str(root / "tokenizer"), context_length=ctx)
    hf_tokenizer = AutoTokenizer.from_pretrained(hf_root / "pretrained")
    prompts = [
        temps[i % len(temps)].format(names[i])
        for names, temps in TINY_TASKS.values()
        for i in range(2)
    ]
    ids = tokenizer(prompts)
    enc = hf_tokenizer(prompts, padding=True, return_tensors="pt")
    n = enc["input_ids"].shape[1]
    assert ids.shape == (len(prompts), ctx)
    assert torch.equal(ids[:, :n], enc["input_ids"]) and not ids[:, n:].any()
    with torch.no_grad():
        hf_text = _pooled(clip.get_text_features(**enc))
        torch.testing.assert_close(model.encode_text(ids), hf_text)
        torch.testing.assert_close(model.logit_scale, clip.logit_scale)

    # images: open_clip's default preprocessing equals the HF processor's on the tiny images
    for task in TASKS:
        test = datasets.load_from_disk(str(hf_root / "datasets" / task))["test"]
        images = [test[i]["image"] for i in range(3)]
        pixels = torch.stack([preprocess(im) for im in images])
        torch.testing.assert_close(pixels, torch.stack([hf_transform(im) for im in images]))
        expert = CLIPVisionModel.from_pretrained(hf_root / "experts" / task).eval()
        with torch.no_grad():
            if task == TASKS[0]:  # the pretrained tower, before experts replace it
                torch.testing.assert_close(
                    model.encode_image(pixels),
                    _pooled(clip.get_image_features(pixel_values=pixels)),
                )
            model.visual.load_state_dict(
                load_file(str(root / "experts" / f"{task}.safetensors")), strict=True
            )
            expected = clip.visual_projection(expert(pixel_values=pixels).pooler_output)
            torch.testing.assert_close(model.encode_image(pixels), expected)
