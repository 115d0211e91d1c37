"""GPT-2 classification pool: backbones with linear layers, per-task heads, task logits."""

import pytest
import torch
from text_helpers import gpt2_pool_dirs, save_glue_datasets

from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.gpt2_classification import GPT2ClassificationPool
from fusion_bench.models.sequence_classification import conv1d_to_linear, linear_to_conv1d


@pytest.fixture
def pool(tmp_path):
    pre, experts = gpt2_pool_dirs(tmp_path)
    data = save_glue_datasets(tmp_path / "data", ("cola", "mnli"))
    tasks = {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()}
    return GPT2ClassificationPool(
        {"_pretrained_": pre, **experts}, tasks=tasks, cache_dir=str(tmp_path / "c")
    )


def test_conv1d_linear_round_trip_is_exact():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = torch.nn.Sequential(Conv1D(5, 3))
    x = torch.randn(4, 3)
    y = conv(x)
    lin = conv1d_to_linear(conv)
    assert isinstance(lin[0], torch.nn.Linear) and lin[0].weight.shape == (5, 3)
    assert torch.allclose(lin(x), y)
    back = linear_to_conv1d(lin)
    assert isinstance(back[0], Conv1D) and torch.allclose(back(x), y)


def test_backbones_have_linear_layers_and_validate(pool):
    pool.validate()
    model = pool.load_model("cola")
    assert type(model).__name__ == "GPT2Model"
    linears = pool.linear_names(model)
    assert "h.0.attn.c_attn" in linears and "h.1.mlp.c_proj" in linears
    assert pool.mlp_names(model) == ["h.0.mlp", "h.1.mlp"]


def test_task_logits_equal_the_experts_own_classifier(pool, tmp_path):
    from transformers import GPT2ForSequenceClassification

    ds = pool.task_dataset("mnli", "train")
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    logits = pool.task_logits(pool.load_model("mnli"), "mnli", x)
    assert logits.shape == (3, 3)
    hf = GPT2ForSequenceClassification.from_pretrained(pool.location("mnli")).eval()
    expected = hf(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    assert torch.allclose(logits, expected, atol=1e-5)


def test_saved_backbone_is_gpt2_format(pool, tmp_path):
    from transformers import GPT2Model
    from transformers.pytorch_utils import Conv1D

    model = pool.load_model("cola")
    x = torch.tensor([[5, 6, 7, 1]])
    before = model(input_ids=x).last_hidden_state
    pool.save_model(model, str(tmp_path / "out"))
    loaded = GPT2Model.from_pretrained(tmp_path / "out").eval()
    assert isinstance(loaded.h[0].attn.c_attn, Conv1D)
    assert torch.allclose(loaded(input_ids=x).last_hidden_state, before, atol=1e-6)


def test_errors(pool, tmp_path):
    with pytest.raises(FusionBenchError, match="no expert named 'rte'"):
        pool.head("rte")
    with pytest.raises(FusionBenchError, match="no data for task 'sst2'"):
        pool.task_dataset("sst2")
    wrong = GPT2ClassificationPool(
        {"_pretrained_": pool.location("_pretrained_"), "x": pool.location("_pretrained_")}
    )
    with pytest.raises(FusionBenchError, match="no trained classification head"):
        wrong.load_model("x")  # a bare GPT2Model: from_pretrained would invent a random head
