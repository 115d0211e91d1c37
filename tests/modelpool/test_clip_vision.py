import pytest
import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool


def _pool(pre, experts, **kw):
    return CLIPVisionModelPool(
        {"_pretrained_": str(pre), **{k: str(v) for k, v in experts.items()}}, **kw
    )


def test_loads_vision_tower_from_full_clip_and_experts(tiny_clip_dirs):
    pre, experts = tiny_clip_dirs
    pool = _pool(pre, experts)
    assert pool.names == ["a", "b", "c"]
    base = pool.load_pretrained()
    a = pool.load_model("a")
    assert type(base).__name__ == "CLIPVisionModel" and not base.training
    diff = [k for k, v in base.state_dict().items() if not torch.equal(v, a.state_dict()[k])]
    assert diff, "expert should differ from the pretrained tower"
    pool.validate()


def test_validation_names_model_and_key(tiny_clip_dirs, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    pre, experts = tiny_clip_dirs
    other = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=16,
            patch_size=8,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    )
    other.save_pretrained(tmp_path / "bad")
    pool = _pool(pre, {**experts, "bad": tmp_path / "bad"})
    with pytest.raises(FusionBenchError, match=r"model 'bad': key '.*mlp.fc1.weight' has shape"):
        pool.validate()


def test_validation_rejects_non_finite(tiny_clip_dirs, tmp_path):
    from transformers import CLIPVisionModel

    pre, experts = tiny_clip_dirs
    m = CLIPVisionModel.from_pretrained(experts["a"])
    with torch.no_grad():
        next(m.parameters())[0] = float("nan")
    m.save_pretrained(tmp_path / "nan")
    with pytest.raises(FusionBenchError, match="'nan'.*NaN"):
        _pool(pre, {"nan": tmp_path / "nan"}).validate()


def test_state_dict_file_expert(tiny_clip_dirs, tmp_path):
    from safetensors.torch import save_file

    pre, experts = tiny_clip_dirs
    pool = _pool(pre, experts)
    sd = pool.load_state_dict("b")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "b.safetensors")
    torch.save(sd, tmp_path / "b.pt")
    pool2 = _pool(pre, {"b1": tmp_path / "b.safetensors", "b2": tmp_path / "b.pt"})
    for name in ("b1", "b2"):
        loaded = pool2.load_state_dict(name)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_pickled_module_is_refused(tiny_clip_dirs, tmp_path):
    pre, experts = tiny_clip_dirs
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(FusionBenchError, match="safely"):
        _pool(pre, {"m": tmp_path / "module.pt"}).load_model("m")


def test_unknown_name_and_save_roundtrip(tiny_clip_dirs, tmp_path):
    pre, experts = tiny_clip_dirs
    pool = _pool(pre, experts)
    with pytest.raises(FusionBenchError, match="no model 'zzz'"):
        pool.load_model("zzz")
    model = pool.load_model("c")
    pool.save_model(model, str(tmp_path / "out"))
    assert (tmp_path / "out" / "model.safetensors").exists()
    again = _pool(tmp_path / "out", {}).load_pretrained()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
