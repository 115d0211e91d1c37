"""Every config/method/*.yaml points at an importable fusion_bench class whose constructor it binds.

Uses plain OmegaConf (the full Hydra composition is tested elsewhere).
"""

import importlib
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fusion_bench.constants import config_dir
from fusion_bench.method.base import BaseMethod

CONFIGS = sorted((config_dir() / "method").glob("*.yaml"))
EXPECTED = {
    "dummy", "individual", "simple_average", "weighted_average", "task_arithmetic",
    "ties_merging", "dare_simple_average", "dare_task_arithmetic", "dare_ties_merging",
    "model_stock", "simple_ensemble",
}  # fmt: skip


def load_target(path: Path):
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    target = cfg.pop("_target_")
    assert target.startswith("fusion_bench."), f"{path.name}: _target_ outside fusion_bench"
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name), cfg


def test_expected_configs_exist():
    assert EXPECTED <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_binds_to_target(path):
    cls, kwargs = load_target(path)
    assert issubclass(cls, BaseMethod)
    sig = inspect.signature(cls)
    sig.bind(**kwargs)  # every key is a constructor argument
    # ... and every constructor argument is spelled out in the YAML (keys match one to one).
    assert set(sig.parameters) == set(kwargs), f"{path.name}: keys differ from {cls.__name__}"
    cls(**kwargs)  # the defaults are valid
    assert path.read_text().startswith("#"), f"{path.name}: start with a comment line"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_name_names_its_module(path):
    """``<module>.yaml`` or a named variant of it (``dare_<module>``, ``<module>_task_wise``,
    ``sparse_<module>``): one algorithm per module, found from its config name."""
    cls, _ = load_target(path)
    package, _, module = cls.__module__.rpartition(".")
    assert package == "fusion_bench.method"
    if path.stem.startswith("dare_"):  # DARE is a preprocessing option of these families
        assert module in ("task_arithmetic", "ties_merging"), path.name
    else:
        assert module in path.stem, f"{path.name}: target lives in unrelated module {module}"
