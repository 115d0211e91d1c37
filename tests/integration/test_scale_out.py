"""Scale-out end to end: Lightning Fabric DDP with 2 CPU processes (gloo) and Hydra's submitit
launcher (its local executor standing in for Slurm), on the smoke build of the tiny benchmark."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytestmark = pytest.mark.integration
SMOKE = "tiny_profile=smoke"
ONE_BATCH = "taskpool.limit_batches=1"


def _report(job_dir):
    return json.loads((job_dir / "report.json").read_text())


def test_ddp_evaluation_gives_the_one_process_metrics(cli):
    for fabric in ("cpu", "ddp_cpu"):
        cli(
            SMOKE,
            ONE_BATCH,
            "method=task_arithmetic",
            f"fabric={fabric}",
            f"hydra.run.dir={fabric}",
        )
    one, ddp_dir = _report(cli.cwd / "cpu"), cli.cwd / "ddp_cpu"
    assert [p.name for p in ddp_dir.rglob("*.json")] == ["report.json"]  # rank 0 alone writes
    ddp = _report(ddp_dir)
    assert ddp["config"]["fabric"]["strategy"] == "ddp" and ddp["config"]["fabric"]["devices"] == 2
    # rank 1 really ran: Lightning re-ran the command in the same Hydra run dir
    assert (ddp_dir / "train_ddp_process_1.log").exists()
    assert len(list(ddp_dir.glob("logs/events.out.tfevents.*"))) == 1
    assert ddp["metrics"].keys() == one["metrics"].keys()
    for task, m in one["metrics"].items():
        assert ddp["metrics"][task]["accuracy"] == m["accuracy"], task
        assert ddp["metrics"][task]["loss"] == pytest.approx(m["loss"], abs=1e-6), task


def test_ddp_adamerging_completes(cli):
    """Two processes, different batches, averaged gradients; minimise_entropy raises if the
    ranks' coefficients differ at the end, so completing means they agreed."""
    cli(
        SMOKE,
        ONE_BATCH,
        "fabric=ddp_cpu",
        "method=adamerging",
        "method.max_steps=2",
        "method.batch_size=4",
        "hydra.run.dir=ada",
    )
    report = _report(cli.cwd / "ada")
    assert report["method_info"]["steps"] == 2 and report["method_info"]["trained"]
    assert (cli.cwd / "ada" / "method_artifacts.safetensors").exists()


def test_submitit_local_grid(cli):
    grid = cli.cwd / "grid"
    proc = cli(
        "-m",
        "hydra/launcher=submitit_local",
        SMOKE,
        ONE_BATCH,
        "fabric=cpu",
        "method=task_arithmetic",
        "method.scaling_factor=0.1,0.3",
        f"hydra.sweep.dir={grid}",
    )
    reports = sorted(grid.rglob("report.json"))
    assert [p.parent.name for p in reports] == [
        f"fabric=cpu,method.scaling_factor={s},method=task_arithmetic,taskpool.limit_batches=1"
        for s in ("0.1", "0.3")
    ]
    factors = [_report(p.parent)["config"]["method"]["scaling_factor"] for p in reports]
    assert factors == [0.1, 0.3]
    # the cells ran as submitit jobs (their stdout is in submitit's logs, not ours)...
    assert len(list((grid / ".submitit").glob("*/*_log.out"))) == 2
    # ...and the launching process's sweep summary saw the files they wrote
    assert f"sweep {grid}: 2 cells: 2 ran, 0 skipped" in proc.stdout


# -- the test-time training loop and the collectives under two real processes (gloo) ----------
TASK_CLASSES = {"t0": slice(0, 3), "t1": slice(3, 5)}


def _toy_pool():
    """Tiny MLP experts with unlabelled data; task ``t`` reads its slice of the 5 outputs."""
    from torch import nn

    from fusion_bench.constants import PRETRAINED
    from fusion_bench.modelpool.base import BaseModelPool

    class ToyPool(BaseModelPool):
        def __init__(self):
            torch.manual_seed(0)
            base = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))
            self.modules_ = {PRETRAINED: base}
            for i, name in enumerate(TASK_CLASSES):
                expert = copy.deepcopy(base)
                g = torch.Generator().manual_seed(i)
                with torch.no_grad():
                    for p in expert.parameters():
                        p.add_(0.5 * torch.randn(p.shape, generator=g))
                self.modules_[name] = expert
            super().__init__({n: f"memory://{n}" for n in self.modules_})
            g = torch.Generator().manual_seed(10)
            self.data = {
                t: torch.utils.data.TensorDataset(torch.randn(40, 4, generator=g), torch.zeros(40))
                for t in TASK_CLASSES
            }

        def _load(self, name, location):
            return copy.deepcopy(self.modules_[name])

        def task_dataset(self, task, split="train"):
            return self.data[task]

        def task_logits(self, model, task, inputs):
            return model(inputs)[:, TASK_CLASSES[task]]

    return ToyPool()


def _rank_worker(fabric, out_dir: str) -> None:
    """Runs on each of the 2 ranks; writes what it observed to ``out_dir/rank<r>.pt``."""
    from fusion_bench.errors import FusionBenchError
    from fusion_bench.method.adamerging import AdaMerging
    from fusion_bench.method.test_time import infinite_batches
    from fusion_bench.taskpool.base import gather_totals
    from fusion_bench.utils.distributed import average_gradients, check_same_across_ranks

    rank = fabric.global_rank
    seen: dict = {"world_size": fabric.world_size}

    # gradients: rank r holds r + 1 -> mean 1.5; a tensor only rank 1 has a gradient for ->
    # half of it everywhere; a tensor nobody has a gradient for stays without one
    p, q, r = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    p.grad = torch.full((2,), rank + 1.0)
    q.grad = torch.ones(2) * 4.0 if rank == 1 else None
    seen["loss"] = average_gradients(fabric, [p, q, r], loss=10.0 * rank)
    seen["grads"] = (p.grad.clone(), q.grad.clone(), r.grad)

    # evaluation totals: different list lengths per rank, merged in rank order
    local = {"count": rank + 1, "texts": [f"r{rank}"] * (rank + 1)}
    seen["totals"] = gather_totals(fabric, local)

    # each rank draws its own batches
    data = torch.utils.data.TensorDataset(torch.arange(40.0), torch.zeros(40))
    seen["first_batch"] = next(infinite_batches(data, 8, seed=0, fabric=fabric))[0].cpu()

    # diverged tensors are detected on every rank
    try:
        check_same_across_ranks(fabric, [torch.tensor([float(rank)])], "toy")
        seen["divergence_detected"] = False
    except FusionBenchError:
        seen["divergence_detected"] = True

    # AdaMerging with 3 steps: identical coefficients on both ranks
    method = AdaMerging(mode="layer_wise", max_steps=3, batch_size=4, lr=0.05)
    method.fabric = fabric
    method.run(_toy_pool())
    seen["coefficients"] = method.artifacts()["coefficients"]
    seen["history"] = method._history
    torch.save(seen, f"{out_dir}/rank{rank}.pt")


def test_two_processes_average_gradients_and_agree_on_coefficients(tmp_path):
    from lightning.fabric import Fabric

    Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2).launch(_rank_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for seen in (r0, r1):
        assert seen["world_size"] == 2
        assert seen["loss"] == pytest.approx(5.0)
        p, q, r = seen["grads"]
        assert p.tolist() == [1.5, 1.5] and q.tolist() == [2.0, 2.0] and r is None
        assert seen["totals"] == {"count": 3, "texts": ["r0", "r1", "r1"]}
        assert seen["divergence_detected"]
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # seed + rank
    assert torch.equal(r0["coefficients"], r1["coefficients"])  # bitwise
    assert r0["history"] == r1["history"]  # the logged loss is the mean over ranks
    assert not torch.allclose(r0["coefficients"], torch.full_like(r0["coefficients"], 0.3))
