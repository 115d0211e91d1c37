"""Every config under config/ composes and binds to its target's signature (no weights loaded)."""

import inspect
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fusion_bench.constants import config_dir
from fusion_bench.utils.instantiate import check_config

GROUPS = ("method", "modelpool", "taskpool", "fabric")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("fusion_bench", overrides=list(overrides))


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), f"config/{group}/ is empty"


def test_default_config_composes():
    cfg = _compose()
    for group in ("method", "modelpool", "taskpool"):
        check_config(OmegaConf.to_container(cfg[group], resolve=True), group)


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in ("method", "modelpool", "taskpool") for o in _options(g)]
)
def test_group_option_binds_to_target(group, option):
    cfg = _compose(f"{group}={option}")
    node = OmegaConf.to_container(cfg[group], resolve=True)
    cls = check_config(node, f"{group} '{option}'")
    assert cls.__module__.startswith("fusion_bench.")
    # the YAML lists every constructor parameter, so that --cfg job shows all of them
    params = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    assert set(params) <= set(node), f"{group}/{option}.yaml misses {set(params) - set(node)}"


@pytest.mark.parametrize("option", _options("fabric"))
def test_fabric_options_match_fabric_signature(option):
    from lightning.fabric import Fabric

    node = OmegaConf.to_container(_compose(f"fabric={option}").fabric, resolve=True)
    node.pop("loggers")
    inspect.signature(Fabric).bind(**node)


def test_help_lists_groups_and_options():
    out = subprocess.run(
        [sys.executable, "-m", "fusion_bench.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for group in ("method", "modelpool", "taskpool", "fabric"):
        assert f"{group}:" in out
        for option in _options(group):
            assert option in out
