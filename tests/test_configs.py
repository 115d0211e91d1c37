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
    """Every option of ``group``. Method presets live in subdirectories (``gpt2/regmean``); the
    task pools' subdirectories hold per-task configs, not options."""
    root = config_dir() / group
    pattern = "**/*.yaml" if group == "method" else "*.yaml"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob(pattern))


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
    "group,option",
    [(g, o) for g in ("method", "modelpool", "taskpool") for o in _options(g)],
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
    lines = {
        line.split(":")[0]: line.split(":", 1)[1].split(", ")
        for line in out.splitlines()
        if ": " in line
    }
    for group in ("method", "modelpool", "taskpool", "fabric", "experiment"):
        for option in _options(group):
            subgroup, _, name = f"{group}/{option}".rpartition("/")  # method/gpt2/regmean
            assert name in [o.strip() for o in lines[subgroup]], (subgroup, name)


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiment_is_a_grid_of_existing_options(name):
    """Each experiment starts with its command, composes, sweeps existing methods only and
    writes into its own fixed sweep dir (so that running it again resumes it). A tuning
    experiment (one that evaluates on ``taskpool.split=validation``) sweeps hyperparameters of
    its one method instead, each an existing key of that method's config."""
    text = (config_dir() / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"fusion_bench -m experiment={name}\n" in text
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("fusion_bench", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    if cfg.taskpool.get("split") == "validation":
        assert "scripts/select_hparam.py" in text  # the tuning's second step: test evaluation
        assert "method" not in params and params, "a tuning experiment sweeps one method"
        for key in params:
            head, _, leaf = key.partition(".")
            assert head == "method" and leaf in cfg.method, key
        methods = [cfg.hydra.runtime.choices.method]
        if cfg.hydra.sweeper._target_.endswith("OptunaSweeper"):  # reruns propose the same trials
            assert cfg.hydra.sweeper.sampler.seed is not None and cfg.objective
    else:
        methods = params.method.split(",")
    assert methods and set(methods) <= set(_options("method")), set(methods) - set(
        _options("method")
    )
    assert cfg.hydra.sweep.dir == f"multirun/experiment/{name}"
    for group in ("modelpool", "taskpool"):
        assert cfg.hydra.runtime.choices[group] in _options(group)
