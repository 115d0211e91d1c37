"""Opening image datasets from every supported location kind."""

from __future__ import annotations

import pytest
from clip_helpers import CLASSNAMES, make_dataset_dict

from fusion_bench.errors import FusionBenchError
from fusion_bench.utils import data as image_datasets
from fusion_bench.utils.data import check_columns, load_dataset_split, num_label_classes
from fusion_bench.zero_shot.image_datasets import ImageClassificationDataset, to_pil

KW = {"what": "dataset of task 't'", "hint": "taskpool.tasks.t.dataset=/path/to/dir"}


@pytest.fixture(scope="module")
def dsd():
    return make_dataset_dict(CLASSNAMES["a"], n_per_class=2)


def _labels(ds):
    return list(ds["label"])


def test_save_to_disk_dataset_dict_picks_split(dsd, tmp_path):
    dsd.save_to_disk(tmp_path / "d")
    ds = load_dataset_split(str(tmp_path / "d"), split="test", **KW)
    assert _labels(ds) == _labels(dsd["test"])
    with pytest.raises(FusionBenchError, match="no split 'validation'; splits: train, test"):
        load_dataset_split(str(tmp_path / "d"), split="validation", **KW)


def test_save_to_disk_single_dataset_is_the_split(dsd, tmp_path):
    dsd["test"].save_to_disk(tmp_path / "one")
    assert len(load_dataset_split(str(tmp_path / "one"), split="test", **KW)) == 6


def test_parquet_file(dsd, tmp_path):
    dsd["test"].to_parquet(tmp_path / "x.parquet")
    ds = load_dataset_split(str(tmp_path / "x.parquet"), split="test", **KW)
    assert _labels(ds) == _labels(dsd["test"])
    assert num_label_classes(ds, "label") == 3  # ClassLabel survives the parquet round trip


def test_parquet_dir_selects_split_files(dsd, tmp_path):
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    dsd["train"].select(range(5)).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    dsd["test"].to_parquet(root / "data" / "test-00000-of-00001.parquet")
    assert len(load_dataset_split(str(root), split="test", **KW)) == 6
    assert len(load_dataset_split(str(root), split="train", **KW)) == 5
    with pytest.raises(FusionBenchError, match="no parquet file for split 'validation'"):
        load_dataset_split(str(root), split="validation", **KW)


def test_parquet_dir_without_split_names_is_the_split(dsd, tmp_path):
    (tmp_path / "p").mkdir()
    dsd["test"].to_parquet(tmp_path / "p" / "part0.parquet")
    dsd["test"].to_parquet(tmp_path / "p" / "part1.parquet")
    assert len(load_dataset_split(str(tmp_path / "p"), split="test", **KW)) == 12


def test_missing_local_path_errors(tmp_path):
    with pytest.raises(FusionBenchError, match="does not exist"):
        load_dataset_split(str(tmp_path / "nope"), split="test", **KW)


def test_hub_id_tries_the_cache_offline_first(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append(datasets.config.HF_HUB_OFFLINE)
        return "cached"

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert load_dataset_split("owner/name", split="test", **KW) == "cached"
    assert calls == [True]  # served from the cache with the network switched off
    assert datasets.config.HF_HUB_OFFLINE is False  # and the flag restored


def test_hub_id_downloads_when_not_cached_and_reachable(monkeypatch):
    import datasets

    def fake_load_dataset(path, name=None, split=None):
        if datasets.config.HF_HUB_OFFLINE:
            raise ConnectionError("not cached")
        return f"downloaded {path} {name} {split}"

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(image_datasets, "hub_reachable", lambda: True)
    got = load_dataset_split("ufldl-stanford/svhn", split="test", subset="cropped_digits", **KW)
    assert got == "downloaded ufldl-stanford/svhn cropped_digits test"


def test_hub_id_offline_not_cached_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FusionBenchError) as err:
        load_dataset_split("fusion-bench-test/no-such-dataset", split="test", **KW)
    assert "\n" not in str(err.value)
    assert "fusion-bench-test/no-such-dataset" in str(err.value)
    assert KW["hint"] in str(err.value)


def test_check_columns(dsd):
    check_columns(dsd["test"], ["image", "label"], task="t", hint="h")
    with pytest.raises(FusionBenchError, match="task 't'.*no column 'lbl'"):
        check_columns(dsd["test"], ["image", "lbl"], task="t", hint="h")


def test_torch_dataset_items_and_batches(dsd):
    import torch
    from torchvision import transforms as T

    data = ImageClassificationDataset(dsd["test"], "image", "label", T.ToTensor())
    x, y = data[3]
    assert x.shape == (3, 20, 20) and y == 1
    batch = data.__getitems__([0, 5])
    assert [b[1] for b in batch] == [0, 2]
    torch.testing.assert_close(batch[0][0], data[0][0])


def test_to_pil_accepts_bytes_and_arrays(dsd):
    import io

    import numpy as np

    im = dsd["test"][0]["image"]
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert to_pil({"bytes": buf.getvalue(), "path": None}).size == im.size
    assert to_pil(buf.getvalue()).size == im.size
    assert to_pil(np.asarray(im)).size == im.size
