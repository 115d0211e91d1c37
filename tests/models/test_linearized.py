"""Partial linearisation (L-LoRA): value at phi_0, first order, exact linearity, training, merging."""

import copy

import pytest
import torch
from text_helpers import byte_tokenizer, tiny_t5
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.models.generation import greedy_generate
from fusion_bench.models.linearized import (
    LinearizedModel,
    linearized_forward,
    merge_linearized,
    merge_linearized_params,
    task_vector,
)


class DictMLP(nn.Module):
    """A small MLP returning a dict with a float and an integer leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net(x)
        return {"y": y, "argmax": y.argmax(-1)}


def tiny_t5_lora(dtype: torch.dtype = torch.float32) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=32,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        feed_forward_proj="gated-gelu",  # as Flan-T5; smooth, unlike ReLU's kinks
    )
    model = T5ForConditionalGeneration(cfg)
    # init_lora_weights=False: B is random too, so the adapter's Jacobian is not degenerate.
    model = get_peft_model(
        model, LoraConfig(r=2, target_modules=["q", "v"], init_lora_weights=False)
    )
    return model.to(dtype).eval()


def t5_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1, 32, (2, 5), generator=g),
        "decoder_input_ids": torch.randint(1, 32, (2, 3), generator=g),
    }


def shifted(lin: LinearizedModel, directions: list[tuple[float, dict]]) -> None:
    """Set ``phi = phi_0 + sum_j a_j d_j``."""
    phi0 = lin.initial_parameters()
    lin.set_parameters({n: p0 + sum(a * d[n] for a, d in directions) for n, p0 in phi0.items()})


def random_direction(lin: LinearizedModel, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(p.shape, generator=g, dtype=p.dtype)
        for n, p in lin.initial_parameters().items()
    }


def logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out["y"]


@pytest.fixture
def mlp_lin() -> LinearizedModel:
    torch.manual_seed(0)
    return LinearizedModel(DictMLP().double())


@pytest.fixture
def t5_lin(monkeypatch) -> LinearizedModel:
    """Tiny T5 + LoRA in float64, exact to ~1e-14.

    T5LayerNorm computes its variance in float32 whatever the dtype, which caps float64 checks at
    ~1e-7 relative; the exactness tests below need the whole model in float64.
    """
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (
            self.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        )

    monkeypatch.setattr(T5LayerNorm, "forward", forward)
    return LinearizedModel(tiny_t5_lora(torch.float64))


def test_mlp_equals_model_at_phi0_and_keeps_output_structure():
    torch.manual_seed(0)
    model = DictMLP()
    lin = LinearizedModel(model)
    x = torch.randn(5, 4)
    out, ref = lin(x), model(x)
    assert set(out) == {"y", "argmax"}
    torch.testing.assert_close(out["y"], ref["y"], rtol=0, atol=1e-6)
    assert out["argmax"].dtype == torch.int64 and torch.equal(out["argmax"], ref["argmax"])


def test_t5_lora_equals_model_at_phi0():
    from transformers.modeling_outputs import Seq2SeqLMOutput

    model = tiny_t5_lora()
    lin = LinearizedModel(model)
    assert lin.trainable_names and all("lora_" in n for n in lin.trainable_names)
    assert len(lin.trainable_names) == 12  # q, v x (enc self, dec self, dec cross) x (A, B)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    inputs = t5_inputs()
    with torch.no_grad():
        out, ref = lin(**inputs), model(**inputs)
    assert isinstance(out, Seq2SeqLMOutput)
    # The LoRA adapter is non-zero, so phi_0 really changes the output.
    with torch.no_grad(), model.disable_adapter():
        assert not torch.allclose(model(**inputs).logits, ref.logits, atol=1e-4)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        out.encoder_last_hidden_state, ref.encoder_last_hidden_state, rtol=1e-5, atol=1e-6
    )
    assert ref.cache is not None and out.cache is None  # a linearised KV cache is meaningless
    with torch.no_grad():
        tup, ref_tup = lin(**inputs, return_dict=False), model(**inputs, return_dict=False)
    assert isinstance(tup, tuple)
    torch.testing.assert_close(tup[0], ref_tup[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["mlp", "t5"])
def test_first_order_matches_finite_differences(which, request):
    lin = request.getfixturevalue(f"{which}_lin")
    inputs = {"x": torch.randn(5, 4, dtype=torch.float64)} if which == "mlp" else t5_inputs()
    d = random_direction(lin, seed=2)
    with torch.no_grad():
        f_lin0 = logits(lin(**inputs))
        shifted(lin, [(1.0, d)])
        jd = logits(lin(**inputs)) - f_lin0  # J d, since f_lin is affine
        errors = []
        for eps in (1e-4, 5e-5):
            shifted(lin, [(eps, d)])
            step = logits(lin(**inputs)) - f_lin0
            f_plus = logits(lin.model(**inputs))  # the original, non-linearised model
            torch.testing.assert_close(step, eps * jd, rtol=1e-9, atol=1e-12)
            shifted(lin, [(-eps, d)])
            f_minus = logits(lin.model(**inputs))
            central = (f_plus - f_minus) / (2 * eps)
            errors.append((central - jd).abs().max().item())
    scale = jd.abs().max().item()
    assert scale > 1e-3  # the direction moves the output
    assert errors[0] < 1e-4 * scale, (errors, scale)
    # Central differences converge to J d at O(eps^2): halving eps divides the error by ~4.
    assert 3.5 < errors[0] / errors[1] < 4.5, errors


@pytest.mark.parametrize("which", ["mlp", "t5"])
def test_linearized_model_is_exactly_linear_in_phi(which, request):
    lin = request.getfixturevalue(f"{which}_lin")
    inputs = {"x": torch.randn(5, 4, dtype=torch.float64)} if which == "mlp" else t5_inputs()
    d1, d2 = random_direction(lin, seed=3), random_direction(lin, seed=4)
    a, b = 0.7, -1.3
    with torch.no_grad():
        base = logits(lin(**inputs))
        shifted(lin, [(1.0, d1)])
        g1, f1 = logits(lin(**inputs)) - base, logits(lin.model(**inputs))
        shifted(lin, [(1.0, d2)])
        g2, f2 = logits(lin(**inputs)) - base, logits(lin.model(**inputs))
        shifted(lin, [(a, d1), (b, d2)])
        combined, f_combined = logits(lin(**inputs)), logits(lin.model(**inputs))
    torch.testing.assert_close(combined, base + a * g1 + b * g2, rtol=1e-10, atol=1e-10)
    # ...whereas the original model is not: the test would catch a plain forward.
    nonlinear = f_combined - (base + a * (f1 - base) + b * (f2 - base))
    assert nonlinear.abs().max() > 1e-3


def test_gradients_reach_only_trainable_params_and_training_reduces_loss():
    lin = LinearizedModel(tiny_t5_lora())
    inputs = t5_inputs()
    labels = torch.randint(
        1, 32, inputs["decoder_input_ids"].shape, generator=torch.Generator().manual_seed(5)
    )
    phi0 = {n: t.clone() for n, t in lin.initial_parameters().items()}
    trainable = lin.trainable_parameters()
    opt = torch.optim.Adam([p for p in lin.parameters() if p.requires_grad], lr=1e-2)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in trainable.values()
    }

    def loss_fn() -> torch.Tensor:
        # The loss of the linearised logits (L-LoRA), not the linearised HF loss.
        out = lin(**inputs).logits
        return nn.functional.cross_entropy(out.flatten(0, 1), labels.flatten())

    losses = []
    for step in range(15):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        if step == 0:
            for n, p in lin.model.named_parameters():
                if n in trainable:
                    assert p.grad is not None and p.grad.abs().sum() > 0, n
                else:
                    assert p.grad is None, n
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    for n, t in lin.initial_parameters().items():  # phi_0 never moves
        assert torch.equal(t, phi0[n])
    assert any(not torch.equal(trainable[n], phi0[n]) for n in phi0)


def test_state_dict_is_self_contained():
    torch.manual_seed(0)
    lin = LinearizedModel(DictMLP())
    phi0 = {n: t.clone() for n, t in lin.initial_parameters().items()}
    lin.set_parameters({n: t + 0.1 for n, t in phi0.items()})
    sd = lin.state_dict()
    assert {"params0.net.0.weight", "model.net.0.weight"} <= set(sd)
    torch.manual_seed(1)
    fresh = LinearizedModel(DictMLP())
    fresh.load_state_dict(sd)
    x = torch.randn(3, 4)
    for n in phi0:
        assert torch.equal(fresh.initial_parameters()[n], phi0[n])
    torch.testing.assert_close(fresh(x)["y"], lin(x)["y"], rtol=0, atol=0)


def test_partial_trainable_names_and_errors():
    torch.manual_seed(0)
    model = DictMLP()
    lin = LinearizedModel(model, trainable_names=["net.2.weight"])
    assert list(lin.trainable_parameters()) == ["net.2.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["net.2.weight"]
    # Linear in the last layer's weight: f_lin equals f for any value of it.
    lin.set_parameters({"net.2.weight": torch.randn(3, 8)})
    x = torch.randn(3, 4)
    torch.testing.assert_close(lin(x)["y"], model(x)["y"])
    with pytest.raises(FusionBenchError, match="unknown parameter"):
        LinearizedModel(DictMLP(), trainable_names=["nope"])
    with pytest.raises(FusionBenchError, match="no trainable"):
        LinearizedModel(DictMLP().requires_grad_(False))
    with pytest.raises(FusionBenchError, match="share keys"):
        linearized_forward(model, {"net.2.weight": torch.zeros(3, 8)}, {}, (x,))


def test_merge_params_hand_computed():
    params0 = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    tau1 = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([2.0])}
    tau2 = {"w": torch.tensor([0.0, -4.0]), "b": torch.tensor([1.0])}
    merged = merge_linearized_params(params0, [tau1, tau2], 0.5)
    torch.testing.assert_close(merged["w"], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(merged["b"], torch.tensor([2.0]))
    merged = merge_linearized_params(params0, [tau1, tau2], [1.0, 0.25])
    torch.testing.assert_close(merged["w"], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(merged["b"], torch.tensor([2.75]))
    assert torch.equal(params0["w"], torch.tensor([1.0, 2.0]))  # inputs untouched
    with pytest.raises(FusionBenchError):
        merge_linearized_params(params0, [tau1, {"w": tau2["w"]}], 0.5)
    with pytest.raises(FusionBenchError, match="scaling factors"):
        merge_linearized_params(params0, [tau1, tau2], [1.0])
    with pytest.raises(FusionBenchError):
        merge_linearized_params(params0, [{"w": torch.zeros(2)}], 1.0)


def test_task_arithmetic_over_linearised_adapters(t5_lin):
    inputs = t5_inputs()
    experts = [copy.deepcopy(t5_lin) for _ in range(2)]  # same phi_0, as L-LoRA experts
    for i, e in enumerate(experts):
        shifted(e, [(0.1, random_direction(e, seed=10 + i))])
    taus = [task_vector(e) for e in experts]
    phi0 = t5_lin.initial_parameters()
    for e, tau in zip(experts, taus, strict=True):
        for n, p in e.trainable_parameters().items():
            torch.testing.assert_close(tau[n], p.detach() - phi0[n], rtol=0, atol=0)
    lam = 0.4
    with torch.no_grad():
        base = t5_lin(**inputs).logits
        deltas = [e(**inputs).logits - base for e in experts]
        merged = merge_linearized(t5_lin, taus, lam)
        assert merged is t5_lin
        for n, p in merged.trainable_parameters().items():
            torch.testing.assert_close(p, phi0[n] + lam * (taus[0][n] + taus[1][n]))
        # Linearised experts add up without interference: f_lin(merged) = f_0 + lam sum_i J tau_i.
        torch.testing.assert_close(
            merged(**inputs).logits, base + lam * (deltas[0] + deltas[1]), rtol=1e-10, atol=1e-10
        )


# -- greedy generation without a KV cache ------------------------------------------------------


def diverse_t5(vocab_size: int, seed: int) -> nn.Module:
    """A tiny T5 re-initialised with N(0, 1) weights: its greedy outputs vary with the input and
    sometimes end with EOS (PyTorch's default init makes it answer one token for everything)."""
    model = tiny_t5(vocab_size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def encoder_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Six right-padded prompts over token ids 3..7 (two of them padded)."""
    ids = torch.randint(3, 8, (6, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[3, 2:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("seed", [2, 4, 8])
@pytest.mark.parametrize("max_new_tokens", [1, 3, 8])
def test_greedy_generate_equals_hf_generate(seed, max_new_tokens):
    model = diverse_t5(8, seed)
    ids, mask = encoder_batch()
    ref = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
    )

    def forward(i, a, d, rows):
        return model(input_ids=i, attention_mask=a, decoder_input_ids=d, use_cache=False).logits

    with torch.inference_mode():
        out = greedy_generate(
            forward,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    assert torch.equal(out, ref), (out, ref)
    if max_new_tokens == 8 and seed in (2, 8):
        # The case the loop must get right: rows that emitted EOS early are padded after it.
        rows = out.tolist()
        assert any(1 in r[:-1] and r[-1] == 0 for r in rows) and any(1 not in r for r in rows)


def test_greedy_generate_stops_when_every_row_has_finished():
    """A scripted model: row ``i`` answers ``5`` until it emits EOS (id 1) at step ``i + 1``."""
    calls = []

    def forward(i, a, d, rows):
        assert torch.equal(i[:, 0], rows)  # row r's first input token is r
        calls.append(rows.tolist())
        logits = torch.zeros(i.shape[0], d.shape[1], 8)
        for k, row in enumerate(i[:, 0].tolist()):
            logits[k, -1, 1 if d.shape[1] == row + 1 else 5] = 1.0
        return logits

    ids = torch.tensor([[0, 9], [1, 9], [2, 9]])
    out = greedy_generate(
        forward,
        ids,
        None,
        max_new_tokens=10,
        decoder_start_token_id=0,
        eos_token_id=[1, 7],
        pad_token_id=0,
    )
    assert out.tolist() == [[0, 1, 0, 0], [0, 5, 1, 0], [0, 5, 5, 1]]
    # finished rows are left out of later forward passes
    assert calls == [[0, 1, 2], [1, 2], [2]]


def test_greedy_generate_errors():
    def forward(i, a, d, rows):
        raise AssertionError

    ids = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(FusionBenchError, match="max_new_tokens"):
        greedy_generate(
            forward,
            ids,
            None,
            max_new_tokens=0,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    with pytest.raises(FusionBenchError, match="pad_token_id or an eos_token_id"):
        greedy_generate(
            forward,
            ids,
            None,
            max_new_tokens=1,
            decoder_start_token_id=0,
            eos_token_id=None,
            pad_token_id=None,
        )


def test_linearized_generate_at_phi0_equals_model_generation():
    from peft import LoraConfig, get_peft_model

    tok = byte_tokenizer()
    torch.manual_seed(0)
    peft_model = get_peft_model(
        diverse_t5(len(tok), seed=1),
        LoraConfig(r=2, target_modules=["q", "v"], init_lora_weights=False),
    ).eval()
    lin = LinearizedModel(peft_model)
    enc = tok(["hello world", "a", "the cat sat on the mat"], padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=1)
    with torch.inference_mode():  # as in the GLUE task pool
        out = lin.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs
        )
        ref = peft_model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs
        )
        with peft_model.disable_adapter():  # the adapter at phi_0 matters for the output
            plain = peft_model.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs
            )
    assert torch.equal(out, ref)
    assert not torch.equal(plain, ref)
    assert out[:, 0].eq(0).all()  # starts with the decoder start token
    texts = tok.batch_decode(out, skip_special_tokens=True)
    assert texts == tok.batch_decode(ref, skip_special_tokens=True) and any(texts)
    # Away from phi_0 the wrapper decodes f_lin, with the same loop.
    shifted(lin, [(0.5, random_direction(lin, seed=7))])
    with torch.inference_mode():
        moved = lin.generate(enc["input_ids"], enc["attention_mask"], 6)
        expected = greedy_generate(
            lambda i, a, d, rows: lin(input_ids=i, attention_mask=a, decoder_input_ids=d).logits,
            enc["input_ids"],
            enc["attention_mask"],
            max_new_tokens=6,
            decoder_start_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    assert torch.equal(moved, expected)
    with pytest.raises(FusionBenchError, match="greedily"):
        lin.generate(enc["input_ids"], enc["attention_mask"], 2, num_beams=4)


def test_generate_linearises_the_encoder_once_exactly(t5_lin):
    """The encoder-cached decoding step (jvp of the decoder in (phi, h) along (phi - phi_0, dh))
    equals the whole linearised model, on every row subset."""
    inputs = t5_inputs()
    ids, dec = inputs["input_ids"], inputs["decoder_input_ids"]
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    shifted(t5_lin, [(0.5, random_direction(t5_lin, seed=8))])
    with torch.no_grad():
        step = t5_lin._decoding_forward(ids, mask)
        for rows in (torch.tensor([0, 1]), torch.tensor([1])):
            got = step(ids[rows], mask[rows], dec[rows], rows)
            ref = t5_lin(
                input_ids=ids[rows], attention_mask=mask[rows], decoder_input_ids=dec[rows]
            )
            torch.testing.assert_close(got, ref.logits, rtol=1e-10, atol=1e-10)
        # Moving only the encoder's adapter changes f_lin through dh alone: still exact.
        shifted(t5_lin, [])  # phi = phi_0
        f0 = t5_lin._decoding_forward(ids, mask)(ids, mask, dec, torch.arange(2))
        d = random_direction(t5_lin, seed=9)
        shifted(t5_lin, [(1.0, {n: v * ("encoder." in n) for n, v in d.items()})])
        moved = t5_lin._decoding_forward(ids, mask)(ids, mask, dec, torch.arange(2))
        ref = t5_lin(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        torch.testing.assert_close(moved, ref, rtol=1e-10, atol=1e-10)
        assert (moved - f0).abs().max() > 1e-3
