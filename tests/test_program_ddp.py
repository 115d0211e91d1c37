"""program.build_fabric under DDP: when Lightning may start the other ranks itself."""

import pytest
from lightning.fabric import Fabric

from fusion_bench import program
from fusion_bench.errors import FusionBenchError

DDP2 = {"accelerator": "cpu", "strategy": "ddp", "devices": 2}


def test_lightning_starts_the_ranks_unless_a_scheduler_did(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert program._starts_own_processes(Fabric(**DDP2))
    assert not program._starts_own_processes(Fabric(accelerator="cpu", devices=1))
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun / a scheduler started every rank
    assert not program._starts_own_processes(Fabric(**DDP2))


def test_ddp_inside_a_multirun_is_refused_before_launching(monkeypatch):
    # Lightning would re-run the command line for rank 1: in a multirun, the whole sweep
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(program, "_in_hydra_multirun", lambda: True)
    with pytest.raises(FusionBenchError, match="inside a Hydra multirun"):
        program.build_fabric(DDP2, None)


def test_outside_hydra_is_not_a_multirun():
    assert not program._in_hydra_multirun()
