"""LoRA / L-LoRA fine-tuning on a tiny random T5: training, determinism, saving, reloading."""

import pytest
import torch
from text_helpers import save_glue_datasets, t5_pool_dirs

from fusion_bench.finetune.lora import finetune_lora, save_finetuned, seq2seq_batch
from fusion_bench.modelpool.seq2seq_lm import Seq2SeqLMPool
from fusion_bench.models.linearized import LinearizedModel
from fusion_bench.tasks.glue_data import load_text_split, parse_text_task

HP = dict(steps=25, batch_size=2, lr=1e-1, rank=2, alpha=4, seed=0, progress=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine they lose a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def setup(tmp_path):
    """``(pretrained_dir, {task: (task_cfg, train_dataset)}, tmp_path)`` for cola and sst2."""
    pre, _ = t5_pool_dirs(tmp_path, experts=())
    data = save_glue_datasets(tmp_path / "data", ("cola", "sst2"))
    tasks = {}
    for task, path in data.items():
        cfg = parse_text_task(task, {"dataset": path, "metadata": {"version": 1}}, "test")
        tasks[task] = (cfg, load_text_split(cfg, "train", "test"))
    return pre, tasks, tmp_path


def _train(pre, tasks, task, linearized, dropout=0.0, **overrides):
    """Fine-tune on ``task``; dropout is off by default (on a 16-wide model, T5's default 0.1
    is noise that hides the loss curve), on where the RNG matters."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    cfg, ds = tasks[task]
    model = AutoModelForSeq2SeqLM.from_pretrained(pre, dropout_rate=dropout)
    tok = AutoTokenizer.from_pretrained(pre)
    return finetune_lora(model, tok, ds, task_cfg=cfg, linearized=linearized, **{**HP, **overrides})


def _lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_seq2seq_batch_shifts_targets_behind_the_start_token():
    rows = [
        {"input_ids": [5, 6, 1], "target_ids": [7, 8, 1]},
        {"input_ids": [5, 1], "target_ids": [9, 1]},
    ]
    b = seq2seq_batch(rows, pad_token_id=0, decoder_start_token_id=3)
    assert b["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["decoder_input_ids"].tolist() == [[3, 7, 8], [3, 9, 0]]
    assert b["labels"].tolist() == [[7, 8, 1], [9, 1, -100]]


@pytest.mark.parametrize("linearized", [False, True])
def test_loss_decreases_and_only_lora_params_change(setup, linearized):
    from transformers import AutoModelForSeq2SeqLM

    pre, tasks, _ = setup
    out = _train(pre, tasks, "cola", linearized)
    losses = out.train_losses
    assert len(losses) == HP["steps"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert isinstance(out, LinearizedModel) == linearized and not out.training
    peft_model = out.model if linearized else out
    base = AutoModelForSeq2SeqLM.from_pretrained(pre).state_dict()
    # Frozen weights are untouched; the LoRA parameters are the only trainable ones and moved.
    for name, p in peft_model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(p, base[key]), name
        assert not p.requires_grad, name
    trainable = {n for n, p in out.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    phi0 = _train(pre, tasks, "cola", linearized, lr=0.0)  # Adam at lr 0: phi stays phi_0
    moved = _lora_params(peft_model)
    start = _lora_params(phi0.model if linearized else phi0)
    assert any(not torch.equal(moved[n], start[n]) for n in moved)


def test_linearized_training_keeps_phi0_shared_across_tasks_and_families(setup):
    pre, tasks, _ = setup
    cola = _train(pre, tasks, "cola", True)
    sst2 = _train(pre, tasks, "sst2", True)
    lora_at_init = _train(pre, tasks, "cola", False, lr=0.0)
    init = _lora_params(lora_at_init)
    for lin in (cola, sst2):
        phi0 = lin.initial_parameters()
        assert set(phi0) == set(init)
        for n, t in phi0.items():  # phi_0 = the LoRA initialisation of the seed
            assert torch.equal(t, init[n]), n
    assert any(
        not torch.equal(p, cola.initial_parameters()[n])
        for n, p in cola.trainable_parameters().items()
    )
    # PEFT's init has B = 0, so J_A f = 0 at phi_0: the linearised model only moves B.
    for n, p in cola.trainable_parameters().items():
        if "lora_A" in n:
            assert torch.equal(p, cola.initial_parameters()[n]), n


@pytest.mark.parametrize("linearized", [False, True])
def test_training_is_deterministic_and_fabric_gives_the_same_result(setup, linearized):
    from lightning.fabric import Fabric

    pre, tasks, _ = setup
    hp = dict(steps=6, dropout=0.1)  # dropout draws random numbers: seeded by `seed`
    a = _train(pre, tasks, "sst2", linearized, **hp)
    torch.manual_seed(123)  # the caller's RNG state does not matter
    b = _train(pre, tasks, "sst2", linearized, **hp)
    c = _train(pre, tasks, "sst2", linearized, **hp, fabric=Fabric(accelerator="cpu", devices=1))
    assert a.train_losses == b.train_losses == c.train_losses
    pa, pb, pc = (_lora_params(m) for m in (a, b, c))
    for n in pa:
        assert torch.equal(pa[n], pb[n]) and torch.equal(pa[n], pc[n]), n
    d = _train(pre, tasks, "sst2", linearized, **hp, seed=1)
    assert d.train_losses != a.train_losses


def test_saved_experts_reload_through_the_pool(setup):
    pre, tasks, tmp = setup
    inputs = {
        "input_ids": torch.tensor([[40, 41, 42, 1], [43, 44, 1, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "decoder_input_ids": torch.tensor([[0, 50], [0, 51]]),
    }
    lin, plain = {}, {}
    for task in tasks:
        lin[task] = _train(pre, tasks, task, True)
        plain[task] = _train(pre, tasks, task, False)
        save_finetuned(lin[task], tmp / "llora" / task)
        save_finetuned(plain[task], tmp / "lora" / task)
    assert (tmp / "llora" / "cola" / "adapter_init.safetensors").exists()
    assert not (tmp / "lora" / "cola" / "adapter_init.safetensors").exists()

    llora_pool = Seq2SeqLMPool(
        {"_pretrained_": pre, **{t: str(tmp / "llora" / t) for t in tasks}},
        peft_experts="linearized",
    )
    llora_pool.validate()
    with torch.no_grad():
        for task in tasks:
            loaded = llora_pool.load_model(task)
            assert isinstance(loaded, LinearizedModel)
            for n, p in loaded.trainable_parameters().items():
                assert torch.equal(p, lin[task].trainable_parameters()[n]), n
                assert torch.equal(
                    loaded.initial_parameters()[n], lin[task].initial_parameters()[n]
                )
            torch.testing.assert_close(
                loaded(**inputs).logits, lin[task](**inputs).logits, rtol=0, atol=0
            )
        pretrained = llora_pool.load_pretrained()  # f_lin at phi_0 = the LoRA init = the base
        phi0 = pretrained.initial_parameters()
        for n, p in pretrained.trainable_parameters().items():
            assert torch.equal(p, phi0[n])

    lora_pool = Seq2SeqLMPool(
        {"_pretrained_": pre, **{t: str(tmp / "lora" / t) for t in tasks}}, peft_experts=True
    )
    with torch.no_grad():
        for task in tasks:
            dense = lora_pool.load_model(task)  # merged W + (alpha / r) B A
            torch.testing.assert_close(
                dense(**inputs).logits, plain[task](**inputs).logits, rtol=1e-5, atol=1e-5
            )
