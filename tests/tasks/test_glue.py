"""GLUE text-to-text tasks: prompts, label words, parsing and scores on hand-made predictions."""

import pytest
from text_helpers import ROWS

from fusion_bench.errors import FusionBenchError
from fusion_bench.tasks.glue import (
    GLUE_TASKS,
    accuracy,
    get_glue_task,
    parse_prediction,
    render_input,
    render_target,
    score,
    spearman,
)

EXPECTED_LABEL_WORDS = {
    "cola": ("unacceptable", "acceptable"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "mrpc": ("no", "yes"),
    "qnli": ("yes", "no"),
    "qqp": ("no", "yes"),
    "rte": ("yes", "no"),
    "sst2": ("negative", "positive"),
}


def test_registry_has_the_eight_glue_tasks():
    assert set(GLUE_TASKS) == {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"}
    assert GLUE_TASKS["mnli"].validation_split == "validation_matched"
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].metric == "spearman"


def test_rendered_prompts_by_hand():
    cola = render_input(GLUE_TASKS["cola"], {"sentence": "the cat sat", "label": 1, "idx": 0})
    assert cola == (
        'Indicate if the following sentence is grammatically correct or not: "the cat sat". '
        "Answere 'acceptable' or 'unacceptable'."
    )
    rte = render_input(GLUE_TASKS["rte"], {"sentence1": "A.", "sentence2": "B."})
    assert rte == "Does the text: 'A.' entail that 'B.' is true? Provide 'yes' or 'no'."
    qnli = render_input(GLUE_TASKS["qnli"], {"question": "who?", "sentence": "Ann."})
    assert qnli.startswith("Given the context: 'Ann.', does the question 'who?' have")


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_every_task_renders_all_its_columns(name):
    task = GLUE_TASKS[name]
    for row in ROWS[name]:
        prompt = render_input(task, row)
        for col in task.text_columns:
            assert f"{row[col]}" in prompt
        assert "{" not in prompt  # every placeholder filled


@pytest.mark.parametrize("name", sorted(EXPECTED_LABEL_WORDS))
def test_label_words_and_round_trip(name):
    task = GLUE_TASKS[name]
    assert task.labels == EXPECTED_LABEL_WORDS[name]
    for i, word in enumerate(task.labels):
        assert render_target(task, i) == word
        assert parse_prediction(task, word) == i
        assert parse_prediction(task, f"  {word.upper()}.") == i  # case, spaces, full stop


def test_stsb_target_and_parse():
    task = GLUE_TASKS["stsb"]
    assert render_target(task, 3.14159) == "3.1"
    assert render_target(task, 5) == "5.0"
    assert parse_prediction(task, "3.4") == pytest.approx(3.4)
    assert parse_prediction(task, "3 . 4") == pytest.approx(3.4)  # word-level tokenizers
    for bad in ("", "three", "3.4.1", "nan", "3 and 4"):
        assert parse_prediction(task, bad) is None, bad


def test_unparsable_classification_outputs():
    task = GLUE_TASKS["mrpc"]
    for bad in ("", "maybe", "yes no", "yess"):
        assert parse_prediction(task, bad) is None, bad
    with pytest.raises(FusionBenchError, match="out of range"):
        render_target(task, 2)


def test_accuracy_counts_unparsable_as_wrong():
    assert accuracy([1, 0, None, 1], [1, 1, 0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        accuracy([1], [1, 0])


def test_spearman_by_hand():
    # perfectly monotone predictions
    assert spearman([0.1, 0.5, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    # the unparsable 4th prediction (gold 4.0 >= 2.5) becomes 0.0: prediction ranks [2, 3, 4, 1]
    # against gold ranks [1, 2, 3, 4]: d = [1, 1, 1, -3], rho = 1 - 6 * 12 / (4 * 15) = -0.2
    assert spearman([1.0, 2.0, 3.0, None], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(-0.2)
    # a constant prediction has no rank correlation
    assert spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


def test_score_reports_metric_score_and_parsed_fraction():
    cola = GLUE_TASKS["cola"]
    out = score(cola, ["acceptable", "unacceptable", "perhaps"], [1, 1, 0])
    assert out == {"accuracy": pytest.approx(1 / 3), "score": pytest.approx(1 / 3), "parsed": 2 / 3}
    stsb = GLUE_TASKS["stsb"]
    out = score(stsb, ["0.5", "1.5", "4.5"], [0.0, 2.0, 5.0])
    assert out["spearman"] == pytest.approx(1.0) and out["parsed"] == 1.0


def test_overrides_are_checked():
    t = get_glue_task("sst2", template="Review: {sentence}", labels=["bad", "good"])
    assert render_input(t, {"sentence": "ok"}) == "Review: ok" and render_target(t, 1) == "good"
    with pytest.raises(FusionBenchError, match="columns"):
        get_glue_task("sst2", template="{premise}")
    with pytest.raises(FusionBenchError, match="3 label words"):
        get_glue_task("sst2", labels=["a", "b", "c"])
    with pytest.raises(FusionBenchError, match="unknown GLUE task 'wnli'"):
        get_glue_task("wnli")
    with pytest.raises(FusionBenchError, match="no column"):
        render_input(GLUE_TASKS["rte"], {"sentence1": "x"})
