"""Unit tests of the tiny text benchmark's data and tokenizer (seconds; nothing is built)."""

import pytest

from fusion_bench.tasks.glue import GLUE_TASKS, parse_prediction, render_input, render_target

# GLUE's columns and label names, as in the Hugging Face ``nyu-mll/glue`` dataset.
GLUE_SCHEMA = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "stsb": (("sentence1", "sentence2"), None),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
}


def test_tasks_are_glue_and_package_import_is_light():
    import subprocess
    import sys

    from fusion_bench.tinybench.text import TASKS

    assert set(TASKS) == set(GLUE_TASKS) == set(GLUE_SCHEMA)
    code = (
        "import sys, fusion_bench.tinybench.text as t; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'datasets', 'peft')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("task", sorted(GLUE_SCHEMA))
def test_features_match_glue(task):
    import datasets

    from fusion_bench.tinybench.text.data import SPECS, features

    columns, names = GLUE_SCHEMA[task]
    feats = features(task)
    assert list(feats) == [*columns, "label", "idx"]
    assert all(feats[c] == datasets.Value("string") for c in columns)
    assert feats["idx"] == datasets.Value("int32")
    if names is None:
        assert feats["label"] == datasets.Value("float32")
    else:
        assert isinstance(feats["label"], datasets.ClassLabel)
        assert tuple(feats["label"].names) == names
    expected = (
        ("train", "validation_matched", "validation_mismatched")
        if task == "mnli"
        else (
            "train",
            "validation",
        )
    )
    assert SPECS[task].splits == expected


@pytest.mark.parametrize("task", sorted(GLUE_SCHEMA))
def test_generator_rows_are_deterministic_and_valid(task):
    from fusion_bench.tinybench.text.data import SPECS, generate

    spec = SPECS[task]
    columns, names = GLUE_SCHEMA[task]
    a = generate(task, "train", 400, seed=3)
    assert [e.row for e in a] == [e.row for e in generate(task, "train", 400, seed=3)]
    assert [e.row for e in a] != [e.row for e in generate(task, "train", 400, seed=4)]
    val = generate(task, spec.splits[1], 400, seed=3)
    assert [e.row for e in a] != [e.row for e in val]
    labels = [e.row["label"] for e in a]
    for e in a:
        assert set(e.row) == {*columns, "label"}
        assert all(isinstance(e.row[c], str) and e.row[c] for c in columns)
        assert e.kind in spec.kinds
    if names is None:
        assert all(0.0 <= y <= 5.0 for y in labels)
        assert len({round(y) for y in labels}) == 6  # the whole 0..5 scale is used
    else:
        assert set(labels) == set(range(len(names)))  # every class occurs
        # the heuristic label differs from the true label exactly on the hard kinds
        for e in a:
            assert (e.heuristic_label != e.row["label"]) == (e.kind in spec.hard_kinds), e
    kinds = {e.kind for e in a}
    assert kinds == set(spec.kinds)


def test_hard_kinds_make_the_heuristic_partially_wrong():
    from fusion_bench.tinybench.text.data import SPECS, generate

    for task in GLUE_SCHEMA:
        if SPECS[task].label_names is None:
            continue
        ex = generate(task, "train", 1000, seed=0)
        agree = sum(e.heuristic_label == e.row["label"] for e in ex) / len(ex)
        assert 0.6 <= agree <= 0.9, (task, agree)


def test_mnli_mismatched_is_another_genre():
    from fusion_bench.tinybench.text.data import generate

    matched = generate("mnli", "validation_matched", 200, seed=0)
    mismatched = generate("mnli", "validation_mismatched", 200, seed=0)
    assert not any(" did " in e.row["premise"] for e in matched)
    assert sum(" did not " in e.row["hypothesis"] for e in mismatched) > 5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from fusion_bench.tinybench.text.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)  # what the real loading code does


def test_tokenizer_special_tokens_follow_t5(tokenizer):
    from fusion_bench.tinybench.text import tokenizer as tk

    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == [tk.PAD, tk.EOS, tk.UNK]
    ids = tokenizer("yes")["input_ids"]
    assert len(ids) == 2 and ids[-1] == tk.EOS_ID
    assert tokenizer("Zyzzyva")["input_ids"][0] == tk.UNK_ID  # not a benchmark word


def test_tokenizer_round_trips_every_template_and_target_word(tokenizer):
    import re

    from fusion_bench.tinybench.text.tokenizer import template_texts

    for text in template_texts():
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert decoded.split() == re.findall(r"\w+|[^\w\s]+", text.lower())
    for task in GLUE_TASKS.values():
        for y in task.labels or (0.0, 3.4, 5.0):
            target = render_target(task, y if task.labels is None else task.labels.index(y))
            decoded = tokenizer.decode(tokenizer(target)["input_ids"], skip_special_tokens=True)
            parsed = parse_prediction(task, decoded)
            assert parsed == (y if task.labels is None else task.labels.index(y)), decoded


@pytest.mark.parametrize("task", sorted(GLUE_SCHEMA))
def test_every_prompt_is_known_words_within_max_length(task, tokenizer):
    from fusion_bench.tinybench.text.data import SPECS, generate

    for split in SPECS[task].splits:
        rows = [e.row for e in generate(task, split, 300, seed=0)]
        prompts = [render_input(GLUE_TASKS[task], r) for r in rows]
        enc = tokenizer(prompts)["input_ids"]
        assert max(len(x) for x in enc) <= tokenizer.model_max_length
        for prompt, ids in zip(prompts, enc, strict=True):
            assert tokenizer.unk_token_id not in ids, prompt


def test_gpt2_tokenizer_is_gpt2_style_and_covers_every_input():
    from fusion_bench.tinybench.text import GPT2_TASKS
    from fusion_bench.tinybench.text import gpt2 as g2
    from fusion_bench.tinybench.text.data import generate
    from fusion_bench.tinybench.text.tokenizer import build_tokenizer

    tok = g2.build_tokenizer()
    assert tok.pad_token is None  # like gpt2's: the pools pad with EOS
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id) == (g2.EOT, g2.EOT_ID, g2.EOT_ID)
    t5_words = set(build_tokenizer().get_vocab()) - {"<pad>", "</s>", "<unk>"}
    assert set(tok.get_vocab()) == t5_words | {g2.EOT}
    a, b = tok("The car is red.")["input_ids"], tok("Is it?")["input_ids"]
    assert tok("The car is red.", "Is it?")["input_ids"] == a + b  # nothing appended or inserted
    for task in GPT2_TASKS:
        ids = g2.encode_classification(tok, task, [e.row for e in generate(task, "train", 200)])
        assert all(g2.EOT_ID not in x and 0 < len(x) <= tok.model_max_length for x in ids), task
