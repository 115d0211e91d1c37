"""open_clip model pools on a tiny custom architecture (registered with ``add_model_config``):
checkpoint formats (safetensors, prefixed state dicts, pickled modules behind the opt-in), the
converter, a merge, adapters and the CLIP task pool with open_clip heads."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import uuid
from pathlib import Path

import pytest
import torch
from clip_helpers import CLASSNAMES, task_cfg, tokenizer

from fusion_bench.errors import FusionBenchError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_openclip_checkpoints.py"


def _arch_config(vocab_size: int, eos_id: int) -> dict:
    return {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 16,
            "layers": 2,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 24,
            "vocab_size": vocab_size,
            "width": 32,
            "heads": 2,
            "layers": 1,
            "pool_type": "eos",
            "eos_id": eos_id,
        },
    }


def _pickled_image_encoder(clip, path: Path, legacy: bool = False) -> None:
    """Save ``clip`` the way the task-vectors release does: a pickled ``src.modeling.ImageEncoder``
    holding the CLIP without its text transformer. The class exists only while saving, so loading
    cannot import it (as for users without that repository)."""
    src = types.ModuleType("src")
    modeling = types.ModuleType("src.modeling")

    class ImageEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

    ImageEncoder.__module__ = "src.modeling"
    ImageEncoder.__qualname__ = "ImageEncoder"
    modeling.ImageEncoder = ImageEncoder
    src.modeling = modeling
    sys.modules["src"], sys.modules["src.modeling"] = src, modeling
    try:
        import copy

        model = copy.deepcopy(clip)
        del model.transformer
        torch.save(ImageEncoder(model), path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules["src"], sys.modules["src.modeling"]


@pytest.fixture(scope="module")
def openclip_files(tmp_path_factory, dataset_dirs):
    """A registered tiny architecture, its whole-CLIP pretrained file, a tokenizer, and experts
    ``a`` / ``b`` in every checkpoint format."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("openclip")
    tok = tokenizer()
    tok.save_pretrained(root / "tokenizer")
    arch = f"fbtest-{uuid.uuid4().hex[:8]}"
    cfg_path = root / f"{arch}.json"
    cfg_path.write_text(json.dumps(_arch_config(len(tok), tok.eos_token_id)))
    open_clip.add_model_config(str(cfg_path))
    torch.manual_seed(0)
    clip = open_clip.create_model(arch).eval()
    with torch.no_grad():  # move norms and logit scale off their init so mix-ups show
        for n, p in clip.named_parameters():
            if "ln" in n or n == "logit_scale":
                p.add_(0.1 * torch.randn_like(p))
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()}, root / "pretrained.safetensors"
    )
    files = {"arch": arch, "config": cfg_path, "root": root, "tokenizer": root / "tokenizer"}
    for i, name in enumerate(CLASSNAMES):
        torch.manual_seed(10 + i)
        expert = {
            k: (v + 0.05 * torch.randn_like(v)).contiguous()
            for k, v in clip.visual.state_dict().items()
        }
        save_file(expert, root / f"{name}.safetensors")
        torch.save({f"model.visual.{k}": v for k, v in expert.items()}, root / f"{name}_sd.pt")
        (root / name).mkdir()
        ft = open_clip.create_model(arch).eval()
        ft.load_state_dict(clip.state_dict())
        ft.visual.load_state_dict(expert)
        _pickled_image_encoder(ft, root / name / "finetuned.pt")
        _pickled_image_encoder(ft, root / f"{name}_legacy.pt", legacy=True)  # torch < 1.6 format
        files[name] = expert
    files["tasks"] = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
    return files


def _pool(files, experts: dict[str, str], **kw):
    from fusion_bench.modelpool.openclip import OpenCLIPVisionModelPool

    return OpenCLIPVisionModelPool(
        models={"_pretrained_": str(files["root"] / "pretrained.safetensors"), **experts},
        arch=files["arch"],
        model_config=str(files["config"]),
        tokenizer=str(files["tokenizer"]),
        tasks=files["tasks"],
        head_cache_dir=str(files["root"] / "heads"),
        **kw,
    )


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_plain_format_loads_the_same_tower(openclip_files):
    f = openclip_files
    pool = _pool(
        f, {"a": str(f["root"] / "a.safetensors"), "b": str(f["root"] / "a_sd.pt")}, validate=True
    )
    pool.validate()
    _equal(pool.load_model("a").state_dict(), f["a"])
    _equal(pool.load_model("b").state_dict(), f["a"])


def test_pickled_module_needs_the_opt_in(openclip_files):
    f = openclip_files
    path = str(f["root"] / "b" / "finetuned.pt")
    pool = _pool(f, {"b": path})
    with pytest.raises(FusionBenchError) as err:
        pool.load_model("b")
    msg = str(err.value)
    assert "\n" not in msg
    assert "modelpool.allow_pickle=true" in msg and "convert_openclip_checkpoints.py" in msg
    _equal(_pool(f, {"b": path}, allow_pickle=True).load_model("b").state_dict(), f["b"])
    legacy = str(f["root"] / "b_legacy.pt")
    _equal(_pool(f, {"b": legacy}, allow_pickle=True).load_model("b").state_dict(), f["b"])


@pytest.fixture(scope="module")
def converter():
    spec = importlib.util.spec_from_file_location("convert_openclip_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_then_merge_equals_merge_of_pickles(openclip_files, converter, capsys):
    from fusion_bench.method.task_arithmetic import TaskArithmetic

    f = openclip_files
    assert converter.main([str(f["root"] / "a")]) == 1  # pickles need --allow-pickle
    err = capsys.readouterr().err  # one line naming the flag, no traceback
    assert err.count("\n") == 1 and "is a pickled module" in err and "--allow-pickle" in err
    assert converter.main(["--allow-pickle", str(f["root"])]) == 0
    out = capsys.readouterr().out
    assert out.count("converted") == 2 and "a/finetuned.safetensors" in out
    assert converter.main(["--allow-pickle", str(f["root"])]) == 0
    assert capsys.readouterr().out.count("kept") == 2
    pickled = _pool(
        f, {n: str(f["root"] / n / "finetuned.pt") for n in CLASSNAMES}, allow_pickle=True
    )
    converted = _pool(f, {n: str(f["root"] / n / "finetuned.safetensors") for n in CLASSNAMES})
    merged_p = TaskArithmetic(scaling_factor=0.3).run(pickled).state_dict()
    merged_c = TaskArithmetic(scaling_factor=0.3).run(converted).state_dict()
    _equal(merged_p, merged_c)
    pre = converted.load_pretrained().state_dict()
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    expect = pre[key] + 0.3 * sum(f[n][key] - pre[key] for n in CLASSNAMES)
    torch.testing.assert_close(merged_c[key], expect)


def test_converter_errors_are_one_line(openclip_files, converter, capsys, tmp_path):
    head = tmp_path / "head_X.pt"
    torch.save({"weight": torch.zeros(2, 3)}, head)
    assert converter.main([str(head)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no open_clip vision tower" in err
    assert converter.main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_adapters_name_modules_that_run(openclip_files):
    f = openclip_files
    pool = _pool(f, {"a": str(f["root"] / "a.safetensors")})
    tower = pool.load_model("a")
    linear = pool.linear_names(tower)
    assert linear and all(n.endswith(("mlp.c_fc", "mlp.c_proj")) for n in linear)
    assert pool.mlp_names(tower) == ["transformer.resblocks.0.mlp", "transformer.resblocks.1.mlp"]
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: seen.append(n))
        for n, m in tower.named_modules()
        if n in linear
    ]
    tower(torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert sorted(seen) == sorted(linear)  # every named layer runs as a module


def test_task_pool_uses_the_open_clip_text_tower(openclip_files, clip_dir):
    import open_clip
    import torch.nn.functional as F

    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    f = openclip_files
    pool = _pool(f, {"a": str(f["root"] / "a.safetensors"), "b": str(f["root"] / "b.safetensors")})
    taskpool = CLIPZeroShotTaskPool(
        clip_model=str(clip_dir), tasks=f["tasks"], head_cache_dir=str(f["root"] / "heads")
    )
    taskpool.bind_modelpool(pool)
    assert taskpool.metadata()["a"]["text_tower"].startswith("open_clip " + f["arch"])
    model = pool.load_model("a")
    metrics = taskpool.evaluate(model)
    assert set(metrics) == {"a", "b"} and 0.0 <= metrics["a"]["accuracy"] <= 1.0

    # the same logits by hand: open_clip text tower + the tower's own projection
    clip = open_clip.create_model(f["arch"], pretrained=str(f["root"] / "pretrained.safetensors"))
    tok = open_clip.tokenizer.HFTokenizer(str(f["tokenizer"]), context_length=24)
    t = taskpool.tasks["a"]
    with torch.no_grad():
        rows = [
            F.normalize(
                F.normalize(clip.encode_text(tok([x.format(c) for x in t.templates])), dim=-1).mean(
                    0
                ),
                dim=-1,
            )
            for c in t.classnames
        ]
        head = torch.stack(rows)
        torch.testing.assert_close(taskpool.zero_shot_head("a"), head)
        x = torch.randn(3, 3, 16, 16)
        expect = clip.logit_scale.exp() * F.normalize(model(x), dim=-1) @ head.T
        torch.testing.assert_close(taskpool.logits(model, x, taskpool.zero_shot_head("a")), expect)


def test_hf_pool_keeps_the_task_pools_text_tower(clip_dir, dataset_dirs):
    from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool
    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
    taskpool = CLIPZeroShotTaskPool(clip_model=str(clip_dir), tasks=tasks)
    before = taskpool.classifier
    taskpool.bind_modelpool(CLIPVisionModelPool({"_pretrained_": "elsewhere/clip"}))
    assert taskpool.classifier is before and taskpool.clip_model == str(clip_dir)


def test_bad_locations_are_one_line_errors(openclip_files, tmp_path):
    f = openclip_files
    with pytest.raises(FusionBenchError, match="is not a checkpoint file"):
        _pool(f, {"a": str(tmp_path)}).load_model("a")
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(FusionBenchError, match="does not fit the open_clip vision tower"):
        _pool(f, {"a": str(bad)}).load_model("a")
    from fusion_bench.modelpool.openclip import OpenCLIPVisionModelPool

    with pytest.raises(FusionBenchError, match="no architecture 'No-Such-Arch'"):
        OpenCLIPVisionModelPool({"_pretrained_": "openai"}, arch="No-Such-Arch").load_pretrained()
    with pytest.raises(FusionBenchError, match="neither a file nor an open_clip pretrained tag"):
        OpenCLIPVisionModelPool({"_pretrained_": "no-such-tag"}, arch="ViT-B-32").load_pretrained()


# Every method config runs on an open_clip pool (through the pool's adapters), in process, with
# the same shortening overrides as tests/integration/test_methods_cli.py.
FEW = {"max_steps": 2, "batch_size": 4}
SHORT = {
    "adamerging": FEW,
    "adamerging_task_wise": FEW,
    "concrete_task_arithmetic": FEW,
    "concrete_adamerging": {**FEW, "adamerging_steps": 2},
    "weight_ensembling_moe": FEW,
    "sparse_weight_ensembling_moe": FEW,
    "twin_merging": FEW,
    "fisher_merging": {"num_fisher_examples": 8, "batch_size": 4},
    "regmean": {"num_regmean_examples": 8, "batch_size": 4},
    "regmean_plusplus": {"num_regmean_examples": 8, "batch_size": 4},
    "smile_upscaling": {"gate_k": 4, "k": 4},
}


def _methods() -> list[str]:
    from fusion_bench.constants import config_dir

    return sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))


@pytest.fixture(scope="module")
def method_setup(openclip_files, clip_dir):
    from fusion_bench.program import build_fabric
    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    f = openclip_files
    tasks = {n: {**c, "validation_split": "train"} for n, c in f["tasks"].items()}
    experts = {n: str(f["root"] / f"{n}.safetensors") for n in CLASSNAMES}
    pool = _pool({**f, "tasks": tasks}, experts)
    taskpool = CLIPZeroShotTaskPool(
        clip_model=str(clip_dir),
        tasks=f["tasks"],
        batch_size=8,
        limit_batches=1,
        head_cache_dir=str(f["root"] / "heads"),
    )
    taskpool.bind_modelpool(pool)
    return pool, taskpool, build_fabric({"accelerator": "cpu", "devices": 1}, None)


@pytest.mark.parametrize("name", _methods())
def test_every_method_runs_on_an_open_clip_pool(method_setup, name):
    from omegaconf import OmegaConf

    from fusion_bench.constants import config_dir
    from fusion_bench.utils.instantiate import instantiate

    pool, taskpool, fabric = method_setup
    cfg = OmegaConf.load(config_dir() / "method" / f"{name}.yaml")
    method = instantiate(OmegaConf.merge(cfg, SHORT.get(name, {})), f"method={name}")
    method.fabric = fabric
    torch.manual_seed(0)
    fused = method.run(pool)
    metrics = taskpool.evaluate(fused, fabric=fabric)
    assert set(metrics) == set(CLASSNAMES)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics.values())
    if name == "smile_upscaling":  # every MLP linear layer became a mixture
        layer = fused.transformer.resblocks[0].mlp.c_fc
        assert not isinstance(layer, torch.nn.Linear)
    if name in ("weight_ensembling_moe", "sparse_weight_ensembling_moe"):
        assert not isinstance(fused.transformer.resblocks[1].mlp, torch.nn.Sequential)


def test_regmean_treats_mlp_layers_by_regression_and_averages_attention(method_setup):
    from fusion_bench.method.regmean import RegMean
    from fusion_bench.method.simple_average import SimpleAverage

    pool, _, fabric = method_setup
    method = RegMean(num_regmean_examples=8, batch_size=4)
    method.fabric = fabric
    reg = method.run(pool).state_dict()
    avg = SimpleAverage().run(pool).state_dict()
    attn = "transformer.resblocks.0.attn.in_proj_weight"
    mlp = "transformer.resblocks.0.mlp.c_fc.weight"
    torch.testing.assert_close(reg[attn], avg[attn])
    assert (reg[mlp] - avg[mlp]).abs().max() > 1e-4


def test_offline_pretrained_tag_fails_at_once_with_the_override(monkeypatch):
    import fusion_bench.models.openclip as openclip
    import fusion_bench.utils.hub as hub
    from fusion_bench.modelpool.openclip import OpenCLIPVisionModelPool

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(openclip, "_cached_tag_file", lambda cfg: None)  # nothing cached
    pool = OpenCLIPVisionModelPool({"_pretrained_": "openai"}, arch="ViT-B-32")
    with pytest.raises(FusionBenchError) as err:
        pool.load_pretrained()
    msg = str(err.value)
    assert "cannot reach the hub to fetch open_clip weights 'ViT-B-32' / 'openai'" in msg
    assert "modelpool.models._pretrained_=" in msg and "\n" not in msg


def test_cached_tag_file_looks_where_open_clip_downloads(monkeypatch, tmp_path):
    import huggingface_hub

    import fusion_bench.models.openclip as openclip

    asked = []

    def lookup(repo, name):
        asked.append((repo, name))
        return str(tmp_path / name) if name == "open_clip_pytorch_model.bin" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lookup)
    cfg = {"hf_hub": "timm/vit_base_patch32_clip_224.openai/"}
    assert openclip._cached_tag_file(cfg) == str(tmp_path / "open_clip_pytorch_model.bin")
    assert asked[0] == ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    asked.clear()
    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda r, n: asked.append((r, n))
    )
    assert openclip._cached_tag_file({"hf_hub": "org/repo/w.bin"}) is None
    assert asked[0] == ("org/repo", "w.bin")
