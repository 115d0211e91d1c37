"""Seq2Seq LM model pool: full and LoRA experts, task data and logits for data-dependent methods."""

import pytest
import torch
from text_helpers import byte_tokenizer, save_glue_datasets, t5_pool_dirs, tiny_t5

from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.seq2seq_lm import Seq2SeqLMPool


def _lora_expert(pretrained_dir, path, seed=0, r=2, alpha=4):
    """A LoRA adapter on q/v with non-zero A and B, saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import T5ForConditionalGeneration

    base = T5ForConditionalGeneration.from_pretrained(pretrained_dir)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=["q", "v"], init_lora_weights=False)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(path)
    return peft_model


def test_full_experts_load_and_save_round_trip(tmp_path):
    pre, experts = t5_pool_dirs(tmp_path)
    pool = Seq2SeqLMPool({"_pretrained_": pre, **experts})
    pool.validate()
    model = pool.load_model("cola")
    assert type(model).__name__ == "T5ForConditionalGeneration" and not model.training
    pool.save_model(model, str(tmp_path / "out"))
    again = Seq2SeqLMPool({"_pretrained_": str(tmp_path / "out")}).load_pretrained()
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert (tmp_path / "out" / "tokenizer.json").exists()


def test_lora_expert_is_merged_as_w_plus_scaled_ba(tmp_path):
    pre, _ = t5_pool_dirs(tmp_path, experts=())
    peft_model = _lora_expert(pre, tmp_path / "lora", r=2, alpha=4)
    pool = Seq2SeqLMPool({"_pretrained_": pre, "cola": str(tmp_path / "lora")}, peft_experts=True)
    model = pool.load_model("cola")
    assert all(p.requires_grad for p in model.parameters())  # dense like a full expert
    merged = model.state_dict()
    base = pool.load_pretrained().state_dict()
    lora = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    a = lora["base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.default.weight"]
    b = lora["base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_B.default.weight"]
    expected = base[key] + (4 / 2) * b @ a
    assert torch.allclose(merged[key], expected, atol=1e-6)
    assert not torch.allclose(merged[key], base[key])  # the adapter changed the weight
    k_key = "encoder.block.0.layer.0.SelfAttention.k.weight"  # not targeted: unchanged
    assert torch.equal(merged[k_key], base[k_key])
    assert set(merged) == set(base)  # dense keys only, no lora_ leftovers


def test_adapter_without_peft_flag_and_flag_without_adapter_fail_clearly(tmp_path):
    pre, experts = t5_pool_dirs(tmp_path, experts=("cola",))
    _lora_expert(pre, tmp_path / "lora")
    with pytest.raises(FusionBenchError, match="is a PEFT adapter.*peft_experts=true"):
        Seq2SeqLMPool({"_pretrained_": pre, "x": str(tmp_path / "lora")}).load_model("x")
    pool = Seq2SeqLMPool({"_pretrained_": pre, "cola": experts["cola"]}, peft_experts=True)
    with pytest.raises(FusionBenchError, match="no adapter_config.json"):
        pool.load_model("cola")
    with pytest.raises(FusionBenchError, match="needs the base model"):
        Seq2SeqLMPool({"cola": experts["cola"]}, peft_experts=True)


def test_task_data_and_logits_over_label_words(tmp_path):
    pre, experts = t5_pool_dirs(tmp_path)
    data = save_glue_datasets(tmp_path / "data", ("cola", "stsb"))
    tasks = {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()}
    pool = Seq2SeqLMPool({"_pretrained_": pre, **experts}, tasks=tasks, cache_dir=str(tmp_path))
    ds = pool.task_dataset("cola", "train")
    inputs, label = ds[0]
    # labelled split: prompt ids + mask, then the verbalised label's ids + mask
    assert inputs.shape == (4, ds.length) and inputs.dtype == torch.long and label == 1
    pad = pool.tokenizer().pad_token_id
    for row, column in ((0, "input_ids"), (2, "target_ids")):
        mask = inputs[row + 1]
        n = int(mask.sum())
        assert n == len(ds.ds[0][column])
        assert torch.equal(inputs[row, :n], torch.tensor(ds.ds[0][column]))
        assert torch.all(inputs[row, n:] == pad) and torch.all(mask[:n] == 1)
    assert pool.tokenizer().decode(ds.ds[0]["target_ids"], skip_special_tokens=True) == (
        "acceptable"
    )
    test_inputs = pool.task_dataset("cola", "test")[0][0]  # unlabelled use: no targets
    assert test_inputs.shape[0] == 2 and torch.equal(
        test_inputs[:2], inputs[:2, : test_inputs.shape[1]]
    )
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    model = pool.load_model("cola")
    logits = pool.task_logits(model, "cola", x)
    assert logits.shape == (2, 2)
    # by hand: the first decoder step's logits at the first token of each label word
    tok = pool.tokenizer()
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in ("unacceptable", "acceptable")]
    full = model(
        input_ids=x[:, 0],
        attention_mask=x[:, 1],
        decoder_input_ids=torch.zeros(2, 1, dtype=torch.long),
    ).logits[:, 0]
    assert torch.allclose(logits, full[:, ids])
    assert pool.task_logits(model, "stsb", x).shape == (2, 6)  # scores 0.0 .. 5.0
    # teacher forcing = what HF computes from labels (shifted right, padding ignored)
    labels = x[:, 2].masked_fill(x[:, 3] == 0, -100)
    forced = pool.activation_forward(model, "cola", x)
    reference = model(input_ids=x[:, 0], attention_mask=x[:, 1], labels=labels).logits
    real = x[:, 3].bool()
    assert forced.shape[1] == x.shape[2] and torch.allclose(
        forced[real], reference[real], atol=1e-6
    )
    assert torch.equal(pool.activation_forward(model, "cola", x[:, :2]), logits)  # no targets
    with pytest.raises(FusionBenchError, match="no validation split"):
        pool.task_dataset("cola", "validation")


def test_pool_adapters_name_t5_blocks():
    model = tiny_t5(len(byte_tokenizer()))
    pool = Seq2SeqLMPool({"_pretrained_": "unused/x"})
    mlps = pool.mlp_names(model)
    assert mlps == [
        "encoder.block.0.layer.1.DenseReluDense",
        "decoder.block.0.layer.2.DenseReluDense",
    ]
    linears = pool.linear_names(model)
    assert "lm_head" not in linears and "encoder.block.0.layer.0.SelfAttention.q" in linears
    assert "decoder.block.0.layer.1.EncDecAttention.o" in linears
    with pytest.raises(FusionBenchError, match="no T5 feed-forward"):
        pool.mlp_names(torch.nn.Linear(2, 2))


# -- L-LoRA experts (peft_experts: linearized) --------------------------------------------------


def _llora_experts(pre, root, tasks=("cola", "sst2"), init_seed=0, alpha=4):
    """L-LoRA experts sharing phi_0 (non-zero A and B from ``init_seed``), each moved along its
    own random direction, saved with save_llora_expert. Returns ``{task: LinearizedModel}``."""
    from peft import LoraConfig, get_peft_model
    from transformers import T5ForConditionalGeneration

    from fusion_bench.models.linearized import LinearizedModel
    from fusion_bench.models.llora import save_llora_expert

    out = {}
    for i, task in enumerate(tasks):
        torch.manual_seed(init_seed)
        peft_model = get_peft_model(
            T5ForConditionalGeneration.from_pretrained(pre),
            LoraConfig(r=2, lora_alpha=alpha, target_modules=["q", "v"], init_lora_weights=False),
        )
        lin = LinearizedModel(peft_model).eval()
        g = torch.Generator().manual_seed(10 + i)
        lin.set_parameters(
            {
                n: p0 + 0.3 * torch.randn(p0.shape, generator=g)
                for n, p0 in lin.initial_parameters().items()
            }
        )
        save_llora_expert(lin, root / task)
        out[task] = lin
    return out


def _t5_batch():
    return {
        "input_ids": torch.tensor([[40, 41, 42, 1], [43, 44, 1, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "decoder_input_ids": torch.tensor([[0, 50], [0, 51]]),
    }


def test_llora_pool_loads_linearised_models_and_task_arithmetic_merges_phi(tmp_path):
    from fusion_bench.method.task_arithmetic import TaskArithmetic
    from fusion_bench.models.linearized import LinearizedModel

    pre, _ = t5_pool_dirs(tmp_path, experts=())
    experts = _llora_experts(pre, tmp_path / "llora")
    pool = Seq2SeqLMPool(
        {"_pretrained_": pre, **{t: str(tmp_path / "llora" / t) for t in experts}},
        peft_experts="linearized",
    )
    assert pool.peft_experts == "linearized"
    pool.validate()
    x = _t5_batch()
    with torch.no_grad():
        base = pool.load_pretrained()
        assert isinstance(base, LinearizedModel)
        phi0 = experts["cola"].initial_parameters()
        for n, p in base.trainable_parameters().items():
            assert torch.equal(p, phi0[n]) and torch.equal(base.initial_parameters()[n], phi0[n])
        f0 = base(**x).logits
        deltas = {}
        for task, lin in experts.items():
            loaded = pool.load_model(task)
            assert isinstance(loaded, LinearizedModel)
            for n, p in loaded.trainable_parameters().items():
                assert torch.equal(p, lin.trainable_parameters()[n]), n
            deltas[task] = loaded(**x).logits - f0

    lam = 0.6
    merged = TaskArithmetic(scaling_factor=lam).run(pool)
    assert isinstance(merged, LinearizedModel)
    with torch.no_grad():
        for n, p in merged.trainable_parameters().items():  # phi_0 + lambda sum_i tau_i
            expected = phi0[n] + lam * sum(
                e.trainable_parameters()[n] - phi0[n] for e in experts.values()
            )
            torch.testing.assert_close(p, expected, rtol=0, atol=1e-6)
            assert torch.equal(merged.initial_parameters()[n], phi0[n])  # tau(params0) = 0
        frozen = dict(merged.model.get_base_model().named_parameters())
        for n, p in base.model.get_base_model().named_parameters():
            if "lora_" not in n:
                assert torch.equal(frozen[n], p), n  # tau(frozen weights) = 0
        # Linearised experts add up: f_lin(merged) = f_0 + lambda sum_i (f_lin(phi_i) - f_0).
        torch.testing.assert_close(
            merged(**x).logits, f0 + lam * sum(deltas.values()), rtol=1e-4, atol=1e-4
        )

    # The merged model is evaluated linearised by the GLUE text task pool...
    from fusion_bench.taskpool.glue_text_generation import GLUETextGenerationTaskPool

    data = save_glue_datasets(tmp_path / "data", ("cola", "sst2"))
    taskpool = GLUETextGenerationTaskPool(
        pre,
        {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()},
        batch_size=2,
        max_new_tokens=3,
        cache_dir=str(tmp_path / "cache"),
    )
    results = taskpool.evaluate(merged)
    assert set(results) == {"cola", "sst2"} and "score" in results["cola"]
    # ...and saved by the pool as an L-LoRA expert, which loads back the same.
    pool.save_model(merged, str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "adapter_init.safetensors").exists()
    again = Seq2SeqLMPool(
        {"_pretrained_": pre, "merged": str(tmp_path / "merged")}, peft_experts="linearized"
    ).load_model("merged")
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, merged(**x).logits, rtol=0, atol=0)


def test_llora_pool_errors_name_the_expert(tmp_path):
    pre, _ = t5_pool_dirs(tmp_path, experts=())
    _llora_experts(pre, tmp_path / "a", tasks=("cola", "sst2"))
    _llora_experts(pre, tmp_path / "b", tasks=("mrpc",), init_seed=1)  # another phi_0
    _llora_experts(pre, tmp_path / "c", tasks=("rte",), alpha=8)  # another LoRA scale
    _lora_expert(pre, tmp_path / "plain")

    def pool(**experts):
        return Seq2SeqLMPool({"_pretrained_": pre, **experts}, peft_experts="linearized")

    cola = str(tmp_path / "a" / "cola")
    with pytest.raises(FusionBenchError, match="'mrpc' does not share phi_0 with 'cola'"):
        pool(cola=cola, mrpc=str(tmp_path / "b" / "mrpc")).load_model("mrpc")
    with pytest.raises(FusionBenchError, match="'rte' has lora_alpha=8"):
        pool(cola=cola, rte=str(tmp_path / "c" / "rte")).load_model("rte")
    with pytest.raises(FusionBenchError, match="'plain'.*not an L-LoRA expert"):
        pool(cola=cola, plain=str(tmp_path / "plain")).load_model("plain")
    with pytest.raises(FusionBenchError, match="'plain'.*not an L-LoRA expert"):
        pool(plain=str(tmp_path / "plain")).load_pretrained()
    with pytest.raises(FusionBenchError, match="true, false or 'linearized'"):
        Seq2SeqLMPool({"_pretrained_": pre, "cola": cola}, peft_experts="linear")
    with pytest.raises(FusionBenchError, match="needs at least one expert"):
        Seq2SeqLMPool({"_pretrained_": pre}, peft_experts="linearized")
    with pytest.raises(FusionBenchError, match="needs the base model"):
        Seq2SeqLMPool({"cola": cola}, peft_experts="linearized")
    # A plain LoRA pool still reads L-LoRA experts as ordinary adapters (merged at phi).
    merged = Seq2SeqLMPool({"_pretrained_": pre, "cola": cola}, peft_experts=True)
    assert type(merged.load_model("cola")).__name__ == "T5ForConditionalGeneration"
