import json
import time

import pytest

from fusion_bench.errors import FusionBenchError
from fusion_bench.utils.hub import load_with_fallback, resolve_location
from fusion_bench.utils.io import atomic_write_json


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    p = atomic_write_json(tmp_path / "r.json", {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_json(p, {"a": Boom()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(FusionBenchError, match="does not exist"):
        resolve_location(str(tmp_path / "nope"))


def test_hub_id_offline_fails_fast_with_hint():
    from transformers import CLIPVisionModel

    start = time.perf_counter()
    with pytest.raises(FusionBenchError) as e:
        load_with_fallback(
            CLIPVisionModel.from_pretrained,
            "openai/clip-vit-base-patch32",
            what="model '_pretrained_'",
            hint="modelpool.models._pretrained_=/path",
        )
    assert time.perf_counter() - start < 10
    assert "cannot reach the Hugging Face hub" in str(e.value)
    assert "modelpool.models._pretrained_=/path" in str(e.value)
