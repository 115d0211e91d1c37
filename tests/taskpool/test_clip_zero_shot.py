"""CLIPZeroShotTaskPool end to end on a tiny random CLIP and tiny datasets on disk."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from clip_helpers import CLASSNAMES, TEMPLATES, make_dataset_dict, task_cfg
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool


def _check_metrics(results, tasks):
    assert list(results) == list(tasks)
    for m in results.values():
        assert set(m) == {"accuracy", "loss"}
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["loss"] > 0 and torch.isfinite(torch.tensor(m["loss"]))


def test_evaluate_save_to_disk(make_pool, vision_model):
    pool = make_pool()
    results = pool.evaluate(vision_model)
    _check_metrics(results, CLASSNAMES)
    assert pool.task_names == ["a", "b"]
    # deterministic: the same model scores the same twice
    assert pool.evaluate(vision_model) == results


def test_evaluate_parquet_file_and_dir(make_pool, vision_model, tmp_path, dataset_dirs):
    ds = make_dataset_dict(CLASSNAMES["a"])
    ds["test"].to_parquet(tmp_path / "a_test.parquet")
    (tmp_path / "pq" / "data").mkdir(parents=True)
    ds["train"].to_parquet(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet")
    ds["test"].to_parquet(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet")
    tasks = {
        "file": task_cfg(tmp_path / "a_test.parquet", CLASSNAMES["a"]),
        "dir": task_cfg(tmp_path / "pq", CLASSNAMES["a"]),
        "disk": task_cfg(dataset_dirs["a"], CLASSNAMES["a"]),
    }
    results = make_pool(tasks).evaluate(vision_model)
    _check_metrics(results, tasks)
    # the same test split in three storage formats gives the same numbers
    assert results["file"] == results["dir"] == results["disk"]


def test_logits_match_hand_computation_and_clip_forward(make_pool, vision_model, clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    pool = make_pool()
    head = pool.zero_shot_head("a")
    assert head.shape == (3, 16)
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(3))
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        logits = pool.logits(vision_model, x, head)
        emb = clip.visual_projection(vision_model(pixel_values=x).pooler_output)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        expected = clip.logit_scale.exp() * emb @ head.T
        torch.testing.assert_close(logits, expected)
        # with a single template the head is CLIP's own text embedding: compare to its forward
        one = make_pool(
            {"a": task_cfg("unused", CLASSNAMES["a"], templates=["a photo of a {}."])}
        ).zero_shot_head("a")
        tok = AutoTokenizer.from_pretrained(clip_dir)
        inputs = tok(
            [f"a photo of a {c}." for c in CLASSNAMES["a"]], padding=True, return_tensors="pt"
        )
        ref = clip(**inputs, pixel_values=x).logits_per_image
        torch.testing.assert_close(pool.logits(vision_model, x, one), ref, rtol=1e-4, atol=1e-4)


def test_head_cache_is_hit_second_time(make_pool, vision_model, monkeypatch, tmp_path):
    from fusion_bench.models import clip_zero_shot

    calls = []
    real = clip_zero_shot.zero_shot_head

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_zero_shot, "zero_shot_head", counting)
    first = make_pool().evaluate(vision_model)
    assert len(calls) == 2
    files = sorted((tmp_path / "heads").glob("*.safetensors"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    # a new pool (new process, same cache dir) reuses the heads: no text-tower call, no write
    second = make_pool().evaluate(vision_model)
    assert len(calls) == 2
    assert [
        f.stat().st_mtime_ns for f in sorted((tmp_path / "heads").glob("*.safetensors"))
    ] == mtimes
    assert second == first
    # other templates are another key
    make_pool({"a": task_cfg("x", CLASSNAMES["a"], templates=["{}"])}).zero_shot_head("a")
    assert len(calls) == 3


def test_corrupt_cache_entry_is_rebuilt(make_pool, tmp_path):
    head = make_pool().zero_shot_head("a")
    (entry,) = (tmp_path / "heads").glob("*.safetensors")
    entry.write_bytes(b"garbage")
    torch.testing.assert_close(make_pool().zero_shot_head("a"), head)


class _Oracle(nn.Module):
    """A vision tower that is perfect on task ``a``: it reads the label off the image brightness
    and outputs the pooled feature that CLIP's visual projection maps onto that class's head."""

    def __init__(self, pool: CLIPZeroShotTaskPool) -> None:
        super().__init__()
        clip, _ = pool.load_clip()
        head = pool.zero_shot_head("a")
        w = clip.visual_projection.weight.detach()  # [proj, hidden]
        self.register_buffer("targets", (torch.linalg.pinv(w) @ head.T).T)
        # brightness of each class's images after the pool's transform
        levels = torch.tensor([40.0 + 60 * k for k in range(3)]) / 255
        mean, std = (
            pool.classifier.transform.transforms[-1].mean[0],
            pool.classifier.transform.transforms[-1].std[0],
        )
        self.register_buffer("levels", (levels - mean) / std)

    def forward(self, pixel_values):
        m = pixel_values[:, 0].mean(dim=(1, 2))
        label = (m[:, None] - self.levels[None]).abs().argmin(dim=1)
        return SimpleNamespace(pooler_output=self.targets[label])


def test_mapping_evaluates_each_task_with_its_model(make_pool, vision_model):
    pool = make_pool()
    oracle = _Oracle(pool)
    results = pool.evaluate({"a": oracle, "b": vision_model})
    assert results["a"]["accuracy"] == 1.0
    assert results["b"] == pool.evaluate(vision_model)["b"]
    # every task needs a model in the mapping, checked before any work
    with pytest.raises(FusionBenchError, match=r"no model for task\(s\) b"):
        pool.evaluate({"a": oracle})


def test_ensemble_averages_member_logits(make_pool, vision_model, clip_dir):
    from transformers import CLIPVisionModel

    other = CLIPVisionModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))

    class Ensemble(nn.Module):  # duck-typed like fusion_bench.models.ensemble.EnsembleModel
        def __init__(self, models):
            super().__init__()
            self.members = nn.ModuleList(models)

    pool = make_pool()
    head = pool.zero_shot_head("a")
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        expected = (pool.logits(vision_model, x, head) + pool.logits(other, x, head)) / 2
        torch.testing.assert_close(pool.logits(Ensemble([vision_model, other]), x, head), expected)
    _check_metrics(pool.evaluate(Ensemble([vision_model, other])), CLASSNAMES)


def test_ensemble_model_class_is_recognised(make_pool, vision_model):
    ensemble = pytest.importorskip("fusion_bench.models.ensemble")
    pool = make_pool()
    model = ensemble.EnsembleModel([vision_model, vision_model])
    head = pool.zero_shot_head("b")
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(pool.logits(model, x, head), pool.logits(vision_model, x, head))


def test_limit_batches_limits(make_pool, vision_model):
    seen = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = vision_model

        def forward(self, pixel_values):
            seen.append(pixel_values.shape[0])
            return self.inner(pixel_values=pixel_values)

    make_pool(batch_size=2, limit_batches=2).evaluate(Counting())
    assert seen == [2, 2, 2, 2]  # 2 batches of 2 for each of the 2 tasks
    seen.clear()
    make_pool(batch_size=5).evaluate(Counting())
    assert seen == [5, 5, 2, 5, 3]  # all of a (12 images) and b (8 images)


def test_fabric_device_and_precision(make_pool, vision_model):
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    pool = make_pool()
    assert pool.evaluate(vision_model, fabric=fabric) == pool.evaluate(vision_model)


def test_missing_column_is_a_clear_error(make_pool, vision_model, dataset_dirs):
    tasks = {"a": task_cfg(dataset_dirs["a"], CLASSNAMES["a"], image_column="img")}
    with pytest.raises(
        FusionBenchError, match=r"task 'a'.*no column 'img'.*columns: image, label, id"
    ):
        make_pool(tasks).evaluate(vision_model)


def test_class_count_mismatch_is_an_error(make_pool, vision_model, dataset_dirs):
    tasks = {"a": task_cfg(dataset_dirs["a"], ["cat", "dog"])}
    with pytest.raises(FusionBenchError, match="3 classes but 2 class names"):
        make_pool(tasks).evaluate(vision_model)


def test_hub_dataset_offline_fails_fast(make_pool, vision_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks = {"eurosat": task_cfg("fusion-bench-test/no-such-dataset", ["x", "y"])}
    start = time.monotonic()
    with pytest.raises(FusionBenchError) as err:
        make_pool(tasks).evaluate(vision_model)
    assert time.monotonic() - start < 20
    msg = str(err.value)
    assert "cannot reach the Hugging Face hub" in msg and "\n" not in msg
    assert "taskpool.tasks.eurosat.dataset=/path/to/dir" in msg


def test_hub_clip_offline_fails_fast(vision_model, monkeypatch, dataset_dirs):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool = CLIPZeroShotTaskPool(
        clip_model="fusion-bench-test/no-such-clip",
        tasks={"a": task_cfg(dataset_dirs["a"], CLASSNAMES["a"])},
    )
    with pytest.raises(FusionBenchError, match=r"taskpool.clip_model=/path/to/clip"):
        pool.evaluate(vision_model)


def test_metadata_and_registry_defaults(make_pool, dataset_dirs):
    pool = make_pool(
        {
            "eurosat": {"dataset": "tanganke/eurosat", "metadata": {"version": 3}},
            "svhn": {
                "dataset": "ufldl-stanford/svhn",
                "subset": "cropped_digits",
                "metadata": {"version": 1},
            },
            "cars": {"dataset": "x/y", "text_task": "stanford-cars", "metadata": {"version": 2}},
        }
    )
    tower = pool.clip_model
    assert pool.metadata() == {
        "eurosat": {
            "version": 3,
            "dataset": "tanganke/eurosat",
            "split": "test",
            "text_tower": tower,
        },
        "svhn": {
            "version": 1,
            "dataset": "ufldl-stanford/svhn",
            "split": "test",
            "subset": "cropped_digits",
            "text_tower": tower,
        },
        "cars": {"version": 2, "dataset": "x/y", "split": "test", "text_tower": tower},
    }
    assert len(pool.tasks["eurosat"].classnames) == 10
    assert len(pool.tasks["cars"].classnames) == 196
    assert (
        pool.tasks["eurosat"].image_column == "image"
        and pool.tasks["eurosat"].label_column == "label"
    )


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"dataset": "x/y", "metadata": {"version": 1}, "colums": 1}, "unknown key"),
        ({"dataset": "x/y"}, "metadata.version is missing"),
        ({"metadata": {"version": 1}}, "dataset is missing"),
        ({"dataset": "x/y", "metadata": {"version": 1}}, "unknown image-classification task"),
        (
            {
                "dataset": "x/y",
                "classnames": ["a"],
                "templates": ["{} and {}"],
                "metadata": {"version": 1},
            },
            "exactly one",
        ),
    ],
)
def test_bad_task_config_errors(cfg, match):
    with pytest.raises(FusionBenchError, match=match):
        CLIPZeroShotTaskPool(clip_model="unused", tasks={"nope": cfg})


def test_accepts_omegaconf_tasks(dataset_dirs, clip_dir):
    from omegaconf import OmegaConf

    tasks = OmegaConf.create({"a": task_cfg(dataset_dirs["a"], CLASSNAMES["a"])})
    pool = CLIPZeroShotTaskPool(clip_model=str(clip_dir), tasks=tasks)
    assert pool.tasks["a"].templates == tuple(TEMPLATES)


def test_worker_processes_give_the_same_numbers(make_pool, vision_model):
    pool = make_pool()
    assert make_pool(num_workers=2).evaluate(vision_model) == pool.evaluate(vision_model)
