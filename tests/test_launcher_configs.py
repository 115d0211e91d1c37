"""Hydra launcher configs for Slurm (hydra-submitit-launcher) compose against the plugin's schema."""

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fusion_bench.constants import config_dir


def _hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("fusion_bench", overrides=list(overrides), return_hydra_config=True).hydra


def test_slurm_gpu_extends_the_plugin_launcher():
    # a key the plugin's SlurmQueueConf does not have would fail to compose
    launcher = _hydra("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.tasks_per_node == 1 and launcher.timeout_min > 0 and launcher.mem_gb > 0
    raw = OmegaConf.to_container(launcher, resolve=False)
    assert raw["submitit_folder"].startswith("${hydra.sweep.dir}/")  # beside the grid's cells


def test_submitit_local_is_available():
    launcher = _hydra("hydra/launcher=submitit_local").launcher
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
