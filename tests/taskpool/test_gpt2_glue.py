"""GPT-2 GLUE task pool: each task scored with its own expert's head on the given backbone."""

import pytest
import torch
import torch.nn.functional as F
from text_helpers import ROWS, gpt2_pool_dirs, save_glue_datasets

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.gpt2_glue import GPT2GLUETaskPool


def _setup(tmp_path, tasks=("cola", "mnli")):
    pre, experts = gpt2_pool_dirs(tmp_path, experts=tasks)
    data = save_glue_datasets(tmp_path / "data", tasks)
    cfg = {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()}
    pool = GPT2GLUETaskPool(pre, cfg, heads=experts, batch_size=2, cache_dir=str(tmp_path / "c"))
    return pool, experts


def test_scores_match_the_experts_own_classifiers(tmp_path):
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    pool, experts = _setup(tmp_path)
    out = pool.evaluate(
        {
            t: GPT2ForSequenceClassification.from_pretrained(p).transformer
            for t, p in experts.items()
        }
    )
    tok = AutoTokenizer.from_pretrained(pool.tokenizer_location)
    for task, path in experts.items():
        hf = GPT2ForSequenceClassification.from_pretrained(path).eval()
        cols = pool.tasks[task].task.text_columns
        correct, loss = 0, 0.0
        for row in ROWS[task]:  # one example at a time: no padding involved
            enc = tok(*[row[c] for c in cols], return_tensors="pt")
            with torch.no_grad():
                logits = hf(**enc).logits[0]
            correct += int(logits.argmax()) == row["label"]
            loss += F.cross_entropy(logits[None], torch.tensor([row["label"]])).item()
        n = len(ROWS[task])
        assert out[task]["accuracy"] == pytest.approx(correct / n)
        assert out[task]["loss"] == pytest.approx(loss / n, rel=1e-4)


def test_config_errors(tmp_path):
    pool, experts = _setup(tmp_path, ("cola",))
    tasks = {"cola": {"dataset": "x/y", "metadata": {"version": 1}}}
    with pytest.raises(FusionBenchError, match="no classification head for task"):
        GPT2GLUETaskPool("tok", tasks, heads={})
    with pytest.raises(FusionBenchError, match="regression"):
        GPT2GLUETaskPool(
            "tok", {"stsb": {"dataset": "x/y", "metadata": {"version": 1}}}, heads={"stsb": "a"}
        )
    bad_head = GPT2GLUETaskPool(
        pool.tokenizer_location,
        {"cola": {"dataset": str(tmp_path / "data" / "cola"), "metadata": {"version": 1}}},
        heads={"cola": pool.tokenizer_location},  # a bare GPT2Model: no head
    )
    with pytest.raises(FusionBenchError, match="no trained classification head"):
        bad_head.prepare()
