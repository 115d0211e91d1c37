"""Integration: build the tiny text benchmark's ``smoke`` profile and load every artefact back."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_smoke_text_build_layout_and_formats(tmp_path, monkeypatch):
    import datasets
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from fusion_bench.tasks.glue import GLUE_TASKS
    from fusion_bench.tinybench.text import BUILD_VERSION, TASKS, ensure_built, is_complete
    from fusion_bench.tinybench.text.train import evaluate

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    root = ensure_built("smoke", seed=0)
    assert root.is_relative_to(tmp_path) and is_complete(root)
    assert ensure_built("smoke", seed=0) == root  # cached: no rebuild
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "temp dir left"

    info = json.loads((root / "BUILD_INFO.json").read_text())
    assert info["profile"] == "smoke" and info["seed"] == 0 and info["version"] == BUILD_VERSION
    for kind in ("pretrained", "experts", "lora"):
        assert set(info["scores"][kind]) == set(TASKS)

    pre_dir = root / "flan-t5" / "pretrained"
    tok = AutoTokenizer.from_pretrained(pre_dir)
    pre = T5ForConditionalGeneration.from_pretrained(pre_dir)
    assert pre.config.vocab_size == len(tok) and pre.config.feed_forward_proj == "gated-gelu"
    for task in TASKS:
        expert = T5ForConditionalGeneration.from_pretrained(root / "flan-t5" / "experts" / task)
        assert expert.state_dict().keys() == pre.state_dict().keys()
        assert AutoTokenizer.from_pretrained(root / "flan-t5" / "experts" / task).vocab == tok.vocab
        lora_dir = root / "flan-t5" / "lora" / task
        assert (lora_dir / "adapter_model.safetensors").exists()
        adapter = json.loads((lora_dir / "adapter_config.json").read_text())
        # a location the pools resolve, not this machine's cache path
        assert adapter["base_model_name_or_path"] == "tiny-text://smoke/flan-t5/pretrained"
        assert sorted(adapter["target_modules"]) == ["q", "v"]
        base = T5ForConditionalGeneration.from_pretrained(pre_dir)
        merged = PeftModel.from_pretrained(base, lora_dir).merge_and_unload()
        assert any(
            not torch.equal(merged.state_dict()[k], pre.state_dict()[k])
            for k in pre.state_dict()
            if k.endswith((".q.weight", ".v.weight"))
        ), f"LoRA adapter of {task} changes nothing"

        dd = datasets.load_from_disk(str(root / "datasets" / task))
        split = GLUE_TASKS[task].validation_split
        assert {"train", split} <= set(dd)
        assert dd[split].column_names[-2:] == ["label", "idx"]

    # the scores on disk are the builder's: reloading and re-evaluating reproduces them
    dd = datasets.load_from_disk(str(root / "datasets" / "mrpc"))
    rows = list(dd["validation"])
    again = evaluate(pre, tok, "mrpc", rows)["score"]
    assert again == pytest.approx(info["scores"]["pretrained"]["mrpc"], abs=1e-9)


def test_smoke_text_build_gpt2_loads_through_the_gpt2_pools(tmp_path, monkeypatch):
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2Model

    from fusion_bench.modelpool.gpt2_classification import GPT2ClassificationPool
    from fusion_bench.taskpool.gpt2_glue import GPT2GLUETaskPool
    from fusion_bench.tinybench.text import GPT2_TASKS, ensure_built
    from fusion_bench.tinybench.text.gpt2 import EOT, EOT_ID

    monkeypatch.setenv("FUSION_BENCH_CACHE", str(tmp_path))
    root = ensure_built("smoke", seed=0)
    info = json.loads((root / "BUILD_INFO.json").read_text())
    assert set(info["scores"]["gpt2_experts"]) == set(GPT2_TASKS) and "stsb" not in GPT2_TASKS

    # GPT-2-style tokenizer: <|endoftext|> only, no pad token, nothing appended, pairs concatenated
    tok = AutoTokenizer.from_pretrained(root / "gpt2" / "pretrained")
    assert tok.pad_token is None and tok.eos_token == EOT and tok.eos_token_id == EOT_ID
    one, two = tok("The teacher buys a car.")["input_ids"], tok("Who buys it?")["input_ids"]
    assert (
        EOT_ID not in one
        and tok("The teacher buys a car.", "Who buys it?")["input_ids"] == one + two
    )
    pre = GPT2Model.from_pretrained(root / "gpt2" / "pretrained")
    assert pre.config.vocab_size == len(tok) and pre.config.n_positions == tok.model_max_length
    for task in GPT2_TASKS:
        expert = GPT2ForSequenceClassification.from_pretrained(root / "gpt2" / "experts" / task)
        assert expert.config.pad_token_id == EOT_ID
        assert expert.transformer.state_dict().keys() == pre.state_dict().keys()

    loc = {t: f"tiny-text://smoke/gpt2/experts/{t}" for t in GPT2_TASKS}
    tasks = {
        t: {"dataset": f"tiny-text://smoke/datasets/{t}", "metadata": {"version": 1}}
        for t in GPT2_TASKS
    }
    pool = GPT2ClassificationPool(
        {"_pretrained_": "tiny-text://smoke/gpt2/pretrained", **loc},
        tasks=tasks,
        max_length=128,
        cache_dir=str(tmp_path / "tok"),
    )
    pool.validate()
    assert pool.tokenizer().pad_token_id == EOT_ID  # padded with EOS, as real GPT-2
    ds = pool.task_dataset("mnli", "train")
    x = torch.stack([ds[i][0] for i in range(4)])
    hf = GPT2ForSequenceClassification.from_pretrained(root / "gpt2" / "experts" / "mnli").eval()
    with torch.no_grad():
        expected = hf(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
        got = pool.task_logits(pool.load_model("mnli"), "mnli", x)
    assert torch.allclose(got, expected, atol=1e-5)

    taskpool = GPT2GLUETaskPool(
        "tiny-text://smoke/gpt2/pretrained",
        tasks,
        loc,
        max_length=128,
        cache_dir=str(tmp_path / "tok"),
    )
    # each expert's backbone with its own head reproduces the builder's validation accuracy
    results = taskpool.evaluate({t: pool.load_model(t) for t in GPT2_TASKS})
    for task in GPT2_TASKS:
        assert results[task]["accuracy"] == pytest.approx(
            info["scores"]["gpt2_experts"][task], abs=1e-9
        ), task
