"""What a run returns to Hydra's sweeper (the Optuna objective), and that it is not a setting."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from fusion_bench.cli import _objective, objective_value
from fusion_bench.report import config_key


@pytest.mark.parametrize(
    "average,metric,expected",
    [
        ({"accuracy": 0.75, "loss": 1.5}, "accuracy", 0.75),
        ({"accuracy": 0.75, "loss": 1.5}, "loss", 1.5),
        ({"score": 0.5}, "accuracy", None),  # GLUE text reports score: a failed trial, not 0
        ({"accuracy": 0.75}, None, None),
        ({}, "accuracy", None),
        ({"score": 0.5, "parsed": 1.0}, "auto", 0.5),  # GLUE text pools
        ({"accuracy": 0.75, "loss": 1.5}, "auto", 0.75),  # CLIP, GPT-2
        ({"loss": 1.5}, "auto", None),
    ],
)
def test_objective_value(average, metric, expected):
    value = objective_value(average, metric)
    assert value == expected and (value is None or isinstance(value, float))


def test_missing_metric_is_logged_in_multirun_only(caplog):
    report = SimpleNamespace(average={"score": 0.5, "parsed": 1.0})
    cfg = OmegaConf.create({"objective": "accuracy"})
    with caplog.at_level(logging.WARNING, logger="fusion_bench"):
        assert _objective(report, cfg, multirun=False) is None
        assert not caplog.records
        assert _objective(report, cfg, multirun=True) is None
    (record,) = caplog.records
    assert "no average 'accuracy' (it has: parsed, score)" in record.getMessage()
    assert _objective(report, OmegaConf.create({"objective": "score"}), multirun=True) == 0.5
    assert _objective(report, OmegaConf.create({"objective": "auto"}), multirun=True) == 0.5


def test_auto_without_a_known_metric_names_what_the_run_has(caplog):
    report = SimpleNamespace(average={"loss": 1.5})
    with caplog.at_level(logging.WARNING, logger="fusion_bench"):
        assert _objective(report, OmegaConf.create({"objective": "auto"}), multirun=True) is None
    (record,) = caplog.records
    assert "objective 'auto': this run has no average 'score' or 'accuracy' (it has: loss)" in (
        record.getMessage()
    )


def test_objective_is_not_part_of_the_config_key_nor_of_dir_names():
    from hydra import compose, initialize_config_dir

    from fusion_bench.constants import config_dir

    cfg = {"method": {"a": 1}, "objective": "accuracy"}
    assert config_key(cfg) == config_key({**cfg, "objective": "loss"})
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        composed = compose("fusion_bench", return_hydra_config=True)
    assert composed.objective == "auto"
    assert "objective" in composed.hydra.job.config.override_dirname.exclude_keys
