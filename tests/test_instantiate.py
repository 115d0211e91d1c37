import pytest

from fusion_bench.errors import FusionBenchError
from fusion_bench.utils.instantiate import check_config, instantiate

POOL = "fusion_bench.modelpool.clip_vision.CLIPVisionModelPool"


def test_unknown_parameter_names_valid_ones():
    with pytest.raises(FusionBenchError) as e:
        check_config({"_target_": POOL, "models": {"a": "x"}, "validat": True}, "modelpool 'p'")
    msg = str(e.value)
    assert "modelpool 'p'" in msg and "'validat'" in msg and "models, validate" in msg
    assert "\n" not in msg


def test_disallowed_target_at_any_depth():
    with pytest.raises(FusionBenchError, match="not allowed"):
        check_config({"_target_": "os.system", "command": "true"}, "method")
    nested = {"_target_": POOL, "models": {"a": {"_target_": "builtins.eval"}}}
    with pytest.raises(FusionBenchError, match=r"at models\.a.*builtins\.eval"):
        check_config(nested, "modelpool")


def test_missing_required_parameter():
    with pytest.raises(FusionBenchError, match="needs parameter 'models'"):
        check_config({"_target_": POOL}, "modelpool")


def test_unimportable_target():
    with pytest.raises(FusionBenchError, match="cannot import"):
        check_config({"_target_": "fusion_bench.nope.Nope"}, "method")


def test_instantiate_builds_object():
    pool = instantiate({"_target_": POOL, "models": {"_pretrained_": "x", "a": "y"}}, "modelpool")
    assert pool.names == ["a"] and pool.has_pretrained


def test_constructor_error_surfaces_as_one_line_not_hydra_wrapper():
    target = "fusion_bench.method.adamerging.AdaMerging"
    with pytest.raises(FusionBenchError) as e:
        instantiate({"_target_": target, "mode": "bogus"}, "method 'adamerging'")
    assert str(e.value).startswith("method 'adamerging': mode must be one of")
    assert "\n" not in str(e.value)
    assert "Error in call to target" not in str(e.value)
