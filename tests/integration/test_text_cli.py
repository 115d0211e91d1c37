"""The language suite end to end through the installed CLI on the smoke build of the tiny text
benchmark: Flan-T5-like pools (full and LoRA experts) with the GLUE text-to-text task pool.

Training methods get a few steps only (wiring, not numbers). Method groups share one Hydra
multirun each; the shortening overrides use ``++`` because Hydra composes a sweep with the
default method first.
"""

import json

import pytest

pytestmark = pytest.mark.integration

T5 = (
    "tiny_profile=smoke",
    "modelpool=flan-t5-tiny_glue",
    "taskpool=flan-t5-tiny_glue_text_generation",
    "taskpool.limit_batches=1",
)
TASKS = {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"}
GROUPS = {
    "data_free": (["simple_average", "task_arithmetic", "ties_merging", "dummy", "individual"], ()),
    "test_time": (
        ["adamerging", "weight_ensembling_moe"],
        ("++method.max_steps=2", "++method.batch_size=4"),
    ),
    "fisher": (["fisher_merging"], ("++method.num_fisher_examples=8", "++method.batch_size=4")),
    "regmean": (["regmean"], ("++method.num_regmean_examples=8", "++method.batch_size=4")),
    "smile": (["smile_upscaling"], ("++method.gate_k=2", "++method.k=2")),
}


def _reports(sweep):
    assert not list(sweep.rglob("error.json")), "a job failed"
    return [json.loads(p.read_text()) for p in sweep.rglob("report.json")]


@pytest.mark.parametrize("group", list(GROUPS))
def test_t5_methods_run_through_cli(cli, group):
    methods, overrides = GROUPS[group]
    sweep = cli.cwd / "multirun"
    cli("-m", *T5, f"method={','.join(methods)}", f"hydra.sweep.dir={sweep}", *overrides)
    reports = _reports(sweep)
    assert len(reports) == len(methods)
    for report in reports:
        assert set(report["metrics"]) == TASKS
        assert set(report["metrics"]["stsb"]) == {"spearman", "score", "parsed"}
        assert set(report["metrics"]["cola"]) == {"accuracy", "score", "parsed"}
        assert -1.0 <= report["average"]["score"] <= 1.0
        assert report["task_metadata"]["mnli"]["split"] == "validation_matched"


def test_t5_lora_pool_and_saved_model(cli):
    out = cli(
        *T5[:1],
        "modelpool=flan-t5-tiny_glue_lora",
        *T5[2:],
        "method=task_arithmetic",
        "save_path=fused",
    )
    assert "average" in out.stdout
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(cli.cwd / "fused")
    tok = AutoTokenizer.from_pretrained(cli.cwd / "fused")
    assert not any("lora" in k for k in model.state_dict())  # dense weights, adapters merged
    assert tok.pad_token_id == 0


def test_gpt2_pool_through_cli(cli, cache_dir):
    from fusion_bench.tinybench.text import BUILD_VERSION, GPT2_TASKS

    sweep = cli.cwd / "multirun"
    cli(
        "-m",
        "tiny_profile=smoke",
        "modelpool=gpt2-tiny_glue",
        "taskpool=gpt2-tiny_glue",
        "method=individual,task_arithmetic",
        f"hydra.sweep.dir={sweep}",
    )
    reports = {r["config"]["method"]["_target_"].rsplit(".", 1)[-1]: r for r in _reports(sweep)}
    assert set(reports) == {"Individual", "TaskArithmetic"}
    info = json.loads(
        (cache_dir / "tiny_text" / f"smoke-seed0-v{BUILD_VERSION}" / "BUILD_INFO.json").read_text()
    )
    for task in GPT2_TASKS:  # each expert with its own head reproduces the builder's accuracy
        got = reports["Individual"]["metrics"][task]["accuracy"]
        assert got == pytest.approx(info["scores"]["gpt2_experts"][task])
    assert set(reports["TaskArithmetic"]["metrics"]) == set(GPT2_TASKS)
