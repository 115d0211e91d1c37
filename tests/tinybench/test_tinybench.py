"""Unit tests of the tiny benchmark's pieces (seconds; nothing is built or downloaded)."""

import numpy as np
import pytest

from fusion_bench.errors import FusionBenchError
from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS


def test_tasks_are_the_fixed_eight_with_distinct_classnames():
    from fusion_bench.tinybench import TASKS

    assert (
        tuple(TINY_TASKS)
        == TASKS
        == (
            "digits",
            "scenes",
            "textures",
            "shapes",
            "stripes",
            "colors",
            "signs",
            "numerals",
        )
    )
    names = [c for classnames, _ in TINY_TASKS.values() for c in classnames]
    assert len(names) == len(set(names)), "class names must be distinct across tasks"
    for classnames, templates in TINY_TASKS.values():
        assert len(classnames) >= 2 and len(templates) >= 2
        assert all(t.count("{}") == 1 for t in templates)


@pytest.mark.parametrize("task", list(TINY_TASKS))
def test_generator_is_deterministic_and_well_formed(task):
    from fusion_bench.tinybench.data import IMAGE_SIZE, generate

    k = len(TINY_TASKS[task][0])
    x, y = generate(task, "train", 3 * k, seed=3)
    x2, y2 = generate(task, "train", 3 * k, seed=3)
    assert x.shape == (3 * k, IMAGE_SIZE, IMAGE_SIZE, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and sorted(set(y.tolist())) == list(range(k))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = generate(task, "train", 3 * k, seed=4)
    xt, _ = generate(task, "test", 3 * k, seed=3)
    assert not np.array_equal(x, x3) and not np.array_equal(x, xt)
    assert x.std() > 5, "images should not be blank"


def test_tokenizer_covers_every_prompt_and_ends_with_eos():
    from fusion_bench.tinybench import tokenizer as tk

    tok = tk.build_tokenizer()
    prompts = tk.all_prompts()
    enc = tok(prompts, padding=True)
    for prompt, ids, mask in zip(prompts, enc["input_ids"], enc["attention_mask"], strict=True):
        n = sum(mask)
        assert tk.UNK_ID not in ids, prompt
        assert ids[0] == tk.BOS_ID and ids[n - 1] == tk.EOS_ID and ids.count(tk.EOS_ID) == 1
        assert all(i == tk.PAD_ID for i in ids[n:])
    assert max(sum(m) for m in enc["attention_mask"]) <= tk.MAX_LENGTH
    assert tk.EOS_ID != 2  # 2 would select transformers' legacy arg-max pooling


def test_tokenizer_round_trips_through_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    from fusion_bench.tinybench import tokenizer as tk

    tok = tk.build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    prompts = tk.all_prompts()[:20]
    assert loaded(prompts)["input_ids"] == tok(prompts)["input_ids"]


def test_to_pixels_matches_image_transform_of_the_saved_processor(tmp_path):
    import io

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    from fusion_bench.models.clip_zero_shot import image_transform
    from fusion_bench.tinybench.build import _image_processor, _png
    from fusion_bench.tinybench.data import generate
    from fusion_bench.tinybench.train import to_pixels

    _image_processor().save_pretrained(tmp_path)
    transform = image_transform(AutoImageProcessor.from_pretrained(tmp_path))
    x, _ = generate("signs", "test", 4, seed=0)
    via_png = torch.stack([transform(Image.open(io.BytesIO(_png(im)))) for im in x])
    torch.testing.assert_close(via_png, to_pixels(x), atol=1e-5, rtol=0)


def test_unknown_profile_raises(tmp_path, monkeypatch):
    from fusion_bench.tinybench import PROFILES, ensure_built

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    with pytest.raises(FusionBenchError) as err:
        ensure_built("no-such-profile")
    assert all(p in str(err.value) for p in PROFILES)
    assert not any(tmp_path.iterdir()), "nothing is created for an unknown profile"


def test_root_encodes_profile_seed_and_version(tmp_path, monkeypatch):
    from fusion_bench.tinybench import BUILD_VERSION, build_root, is_complete

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    root = build_root("smoke", seed=7)
    assert root.parent == tmp_path / "tiny_clip"
    assert "smoke" in root.name and "7" in root.name and f"v{BUILD_VERSION}" in root.name
    assert not is_complete(root)


def test_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, fusion_bench.tinybench; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'datasets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
