"""Integration: build the ``smoke`` profile end to end and load every artefact back."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_smoke_build_layout_and_formats(tmp_path, monkeypatch):
    import datasets
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, CLIPVisionModel

    from fusion_bench.tinybench import BUILD_VERSION, TASKS, ensure_built, is_complete
    from fusion_bench.tinybench.check import check_build

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    root = ensure_built("smoke", seed=0)
    assert root.is_relative_to(tmp_path) and is_complete(root)
    assert ensure_built("smoke", seed=0) == root  # cached: no rebuild
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "temp dir left"

    info = json.loads((root / "BUILD_INFO.json").read_text())
    assert info["profile"] == "smoke" and info["seed"] == 0 and info["version"] == BUILD_VERSION
    assert set(info["accuracy"]["pretrained"]) == set(TASKS) == set(info["accuracy"]["experts"])

    clip = CLIPModel.from_pretrained(root / "pretrained")
    tok = AutoTokenizer.from_pretrained(root / "pretrained")
    proc = AutoImageProcessor.from_pretrained(root / "pretrained")
    assert clip.config.text_config.eos_token_id == tok.eos_token_id
    assert proc.crop_size["height"] == clip.config.vision_config.image_size
    for task in TASKS:
        expert = CLIPVisionModel.from_pretrained(root / "experts" / task)
        assert expert.state_dict().keys() == clip.vision_model.state_dict().keys()
        dd = datasets.load_from_disk(str(root / "datasets" / task))
        assert {"train", "test"} <= set(dd)
        assert isinstance(dd["test"].features["image"], datasets.Image)
        assert isinstance(dd["test"].features["label"], datasets.ClassLabel)

    table = check_build(root)
    for task in TASKS:  # the check reads from disk what the builder measured in memory
        assert table["pretrained"][task] == pytest.approx(
            info["accuracy"]["pretrained"][task], abs=1e-6
        )
        assert table["experts"][task] == pytest.approx(info["accuracy"]["experts"][task], abs=1e-6)
