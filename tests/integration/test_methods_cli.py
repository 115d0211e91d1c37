"""Every method in ``config/method/`` runs end to end through the installed CLI (smoke build).

Training methods get a few steps only: this proves the wiring (pool data, Fabric loop, model
build, evaluation, report), not the numbers, which ``scripts/tiny_table.sh`` measures. Methods
that take the same shortening overrides share one Hydra multirun (one process start); the
overrides use ``++`` because Hydra first composes a sweep with the default method, which does
not have them.
"""

import json

import pytest

from fusion_bench.constants import config_dir

pytestmark = pytest.mark.integration

FEW_STEPS = ("++method.max_steps=2", "++method.batch_size=4")
GROUPS = {
    "test_time": (
        ["adamerging", "adamerging_task_wise", "concrete_task_arithmetic"]
        + ["weight_ensembling_moe", "sparse_weight_ensembling_moe", "twin_merging"],
        FEW_STEPS,
    ),
    "concrete_adamerging": (["concrete_adamerging"], (*FEW_STEPS, "++method.adamerging_steps=2")),
    "fisher": (["fisher_merging"], ("++method.num_fisher_examples=8", "++method.batch_size=4")),
    "regmean": (
        ["regmean", "regmean_plusplus"],
        ("++method.num_regmean_examples=8", "++method.batch_size=4"),
    ),
    "smile": (["smile_upscaling"], ("++method.gate_k=4", "++method.k=4")),
}
ALL = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))
GROUPS["data_free"] = (sorted(set(ALL) - {m for ms, _ in GROUPS.values() for m in ms}), ())


def test_groups_cover_every_method_config():
    assert sorted(m for ms, _ in GROUPS.values() for m in ms) == ALL


@pytest.mark.parametrize("group", list(GROUPS))
def test_methods_run_through_cli(cli, group):
    methods, overrides = GROUPS[group]
    sweep = cli.cwd / "multirun"
    cli(
        "-m",
        "tiny_profile=smoke",
        f"method={','.join(methods)}",
        "taskpool.limit_batches=1",
        f"hydra.sweep.dir={sweep}",
        *overrides,
    )
    reports = {}
    for path in sweep.rglob("report.json"):
        report = json.loads(path.read_text())
        reports[report["config"]["method"]["_target_"], path.parent.name] = report
    assert not list(sweep.rglob("error.json")), "a job failed"
    assert len(reports) == len(methods)
    for report in reports.values():
        assert len(report["metrics"]) == 8
        assert all(0.0 <= m["accuracy"] <= 1.0 for m in report["metrics"].values())
