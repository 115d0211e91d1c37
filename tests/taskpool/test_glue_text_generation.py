"""GLUE text-to-text task pool: tokenisation cache, generation, scoring, errors."""

import pytest
import torch
from text_helpers import ROWS, byte_tokenizer, save_glue_datasets, tiny_t5
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.glue_text_generation import GLUETextGenerationTaskPool
from fusion_bench.tasks.glue import GLUE_TASKS, render_input, render_target


class OracleT5(nn.Module):
    """Generates the gold answer of every prompt it knows (or a fixed text for unknown ones)."""

    def __init__(self, tokenizer, answers: dict[str, str], fallback: str = "zzz"):
        super().__init__()
        self.tok = tokenizer
        self.answers = answers
        self.fallback = fallback
        self.weight = nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, attention_mask, **kwargs):
        prompts = self.tok.batch_decode(input_ids, skip_special_tokens=True)
        texts = [self.answers.get(p, self.fallback) for p in prompts]
        return self.tok(texts, padding=True, return_tensors="pt")["input_ids"]


def _pool(tmp_path, tasks=("cola", "stsb", "mnli"), **kw):
    tok_dir = tmp_path / "tok"
    byte_tokenizer().save_pretrained(tok_dir)
    data = save_glue_datasets(tmp_path / "data", tasks)
    cfg = {t: {"dataset": data[t], "subset": None, "metadata": {"version": 1}} for t in tasks}
    return GLUETextGenerationTaskPool(
        str(tok_dir), cfg, batch_size=2, cache_dir=str(tmp_path / "cache"), **kw
    )


def _answers(tasks):
    return {
        render_input(GLUE_TASKS[t], r): render_target(GLUE_TASKS[t], r["label"])
        for t in tasks
        for r in ROWS[t]
    }


def test_oracle_scores_perfectly_and_garbage_scores_nothing(tmp_path):
    tasks = ("cola", "stsb", "mnli")
    pool = _pool(tmp_path, tasks)
    tok = pool.tokenizer()
    out = pool.evaluate(OracleT5(tok, _answers(tasks)))
    assert out["cola"] == {"accuracy": 1.0, "score": 1.0, "parsed": 1.0}
    assert out["mnli"]["accuracy"] == 1.0
    assert out["stsb"]["spearman"] == pytest.approx(1.0)
    bad = pool.evaluate(OracleT5(tok, {}, fallback="no idea"))
    assert bad["cola"] == {"accuracy": 0.0, "score": 0.0, "parsed": 0.0}
    # every unparsable score becomes the far end of the scale from its gold: fully anti-ranked
    assert bad["stsb"]["parsed"] == 0.0 and bad["stsb"]["spearman"] == pytest.approx(-1.0)


def test_real_t5_generation_runs_and_reports_each_metric(tmp_path):
    pool = _pool(tmp_path, ("sst2", "stsb"), max_new_tokens=3)
    model = tiny_t5(len(pool.tokenizer()))
    out = pool.evaluate(model)
    assert set(out["sst2"]) == {"accuracy", "score", "parsed"}
    assert set(out["stsb"]) == {"spearman", "score", "parsed"}
    assert 0.0 <= out["sst2"]["accuracy"] <= 1.0
    assert pool.metadata()["stsb"]["metric"] == "spearman"


def test_per_task_model_mapping(tmp_path):
    tasks = ("cola", "sst2")
    pool = _pool(tmp_path, tasks)
    tok = pool.tokenizer()
    good, bad = OracleT5(tok, _answers(tasks)), OracleT5(tok, {})
    out = pool.evaluate({"cola": good, "sst2": bad})
    assert out["cola"]["accuracy"] == 1.0 and out["sst2"]["accuracy"] == 0.0
    with pytest.raises(FusionBenchError, match="no model for task"):
        pool.evaluate({"cola": good})


def test_tokenised_datasets_are_cached_by_template(tmp_path):
    pool = _pool(tmp_path, ("cola",))
    first = pool.dataset("cola")
    files = sorted((tmp_path / "cache").glob("cola-*.arrow"))
    assert len(files) == 1
    prompt = render_input(GLUE_TASKS["cola"], ROWS["cola"][0])
    assert pool.tokenizer().decode(first[0]["input_ids"], skip_special_tokens=True) == prompt
    assert pool.tokenizer().decode(first[0]["target_ids"], skip_special_tokens=True) == (
        "acceptable"
    )
    again = _pool(tmp_path, ("cola",)).dataset("cola")  # same key: read from the cache
    assert again.cache_files[0]["filename"] == str(files[0])
    tasks = {
        "cola": {
            "dataset": str(tmp_path / "data" / "cola"),
            "template": "Is it fine: {sentence}",
            "metadata": {"version": 2},
        }
    }
    other = GLUETextGenerationTaskPool(
        str(tmp_path / "tok"), tasks, cache_dir=str(tmp_path / "cache")
    ).dataset("cola")
    assert len(list((tmp_path / "cache").glob("cola-*.arrow"))) == 2
    assert other.cache_files[0]["filename"] != str(files[0])


def test_errors_are_one_line_and_actionable(tmp_path):
    with pytest.raises(FusionBenchError, match="task pool is empty"):
        GLUETextGenerationTaskPool("tok", {})
    with pytest.raises(FusionBenchError, match="metadata.version is missing"):
        GLUETextGenerationTaskPool("tok", {"cola": {"dataset": "x/y"}})
    with pytest.raises(FusionBenchError, match="unknown key"):
        GLUETextGenerationTaskPool(
            "tok", {"cola": {"dataset": "x/y", "colour": 1, "metadata": {"version": 1}}}
        )
    pool = _pool(tmp_path, ("cola",))
    with pytest.raises(FusionBenchError, match="cannot generate text"):
        pool.evaluate(nn.Linear(2, 2))
    data = save_glue_datasets(tmp_path / "d2", ("sst2",))
    wrong = GLUETextGenerationTaskPool(
        str(tmp_path / "tok"),
        {"cola": {"dataset": data["sst2"], "text_task": "rte", "metadata": {"version": 1}}},
    )
    with pytest.raises(FusionBenchError, match="no column 'sentence1'"):
        wrong.prepare()
