"""SmileMoELinear and SmileUpscaling: routing, exactness of full-rank experts, parameter counts."""

import copy

import pytest
import torch
from torch import nn

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.method.smile_upscaling import SmileUpscaling
from fusion_bench.models.smile_moe import SmileMoELinear, smile_linear_num_params

IN, OUT, E = 8, 5, 3


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def orthogonal_experts(pretrained: nn.Linear, rank: int = 2, seed: int = 0) -> list[nn.Linear]:
    """Experts whose weight deltas act on disjoint coordinate blocks of the input.

    Expert ``i``'s delta has rank ``rank`` and row space ``span(e_{rank i}, ...)``, so an input
    in that block has routing logit ``||x||`` for expert ``i`` and 0 for the others.
    """
    g = _gen(seed)
    experts = []
    for i in range(E):
        e = copy.deepcopy(pretrained)
        with torch.no_grad():
            delta = torch.zeros(pretrained.out_features, pretrained.in_features)
            block = slice(rank * i, rank * (i + 1))
            delta[:, block] = torch.randn(pretrained.out_features, rank, generator=g) * (i + 1)
            e.weight.add_(delta)
            if e.bias is not None:
                e.bias.add_(torch.randn(pretrained.out_features, generator=g))
        experts.append(e)
    return experts


def block_input(i: int, *lead: int, rank: int = 2, seed: int = 1) -> torch.Tensor:
    x = torch.zeros(*lead, IN)
    x[..., rank * i : rank * (i + 1)] = torch.randn(*lead, rank, generator=_gen(seed))
    return x


@pytest.fixture
def linears():
    torch.manual_seed(0)
    pretrained = nn.Linear(IN, OUT)
    return pretrained, orthogonal_experts(pretrained)


# -- SmileMoELinear ---------------------------------------------------------------------------
def test_forced_full_rank_expert_equals_its_linear(linears):
    pretrained, experts = linears
    layer = SmileMoELinear.from_linears(pretrained, experts, k=-1, gate_k=2)
    x = torch.randn(4, IN)
    with torch.no_grad():
        for i, expert in enumerate(experts):
            one_hot = torch.zeros(4, E).index_fill_(1, torch.tensor([i]), 1.0)
            out = pretrained(x) + layer.experts_output(x, one_hot)
            torch.testing.assert_close(out, expert(x))


def test_routing_picks_the_expert_of_the_input_subspace(linears):
    pretrained, experts = linears
    layer = SmileMoELinear.from_linears(pretrained, experts, k=-1, gate_k=2, top_k=1)
    with torch.no_grad():
        for i, expert in enumerate(experts):
            x = block_input(i, 2, 3)  # any leading dims
            logits = layer.routing_logits(x)
            torch.testing.assert_close(logits[..., i], x.norm(dim=-1))
            others = logits[..., [j for j in range(E) if j != i]]
            torch.testing.assert_close(others, torch.zeros_like(others), atol=1e-5, rtol=0)
            torch.testing.assert_close(layer(x), expert(x))
        # tokens of one batch routed to different experts, each reproducing its own expert
        x = torch.stack([block_input(i, 5) for i in range(E)], dim=1)  # [5, E, IN]
        expected = torch.stack([experts[i](x[:, i]) for i in range(E)], dim=1)
        torch.testing.assert_close(layer(x), expected)


def test_top_k_equal_to_num_experts_is_softmax_over_all(linears):
    pretrained, experts = linears
    layer = SmileMoELinear.from_linears(pretrained, experts, k=-1, gate_k=1, top_k=E)
    x = torch.randn(6, IN)
    with torch.no_grad():
        w = torch.softmax(layer.routing_logits(x), dim=-1)
        torch.testing.assert_close(layer.routing_weights(x), w)
        expected = pretrained(x) + sum(
            w[:, i : i + 1] * (expert(x) - pretrained(x)) for i, expert in enumerate(experts)
        )
        torch.testing.assert_close(layer(x), expected)
        # equal logits (x outside every router subspace) -> uniform: the experts' average
        x = torch.zeros(3, IN)
        x[:, 6:] = torch.randn(3, 2)
        torch.testing.assert_close(layer.routing_weights(x), torch.full((3, E), 1 / E))
        torch.testing.assert_close(layer(x), torch.stack([e(x) for e in experts]).mean(0))


def test_low_rank_expert_is_the_truncated_delta(linears):
    pretrained, experts = linears
    layer = SmileMoELinear.from_linears(pretrained, experts, k=1, gate_k=2)
    assert (layer.k, layer.gate_k) == (1, 2)
    delta = experts[0].weight - pretrained.weight
    u, s, vh = torch.linalg.svd(delta.detach())
    x = block_input(0, 4)
    with torch.no_grad():
        expected = pretrained(x) + x @ (s[0] * torch.outer(u[:, 0], vh[0])).T
        expected += experts[0].bias - pretrained.bias
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_formula(bias):
    pretrained = nn.Linear(6, 4, bias=bias)
    experts = [copy.deepcopy(pretrained) for _ in range(3)]
    for e in experts:
        with torch.no_grad():
            e.weight.add_(torch.randn(4, 6))
    layer = SmileMoELinear.from_linears(pretrained, experts, k=2, gate_k=1)
    # m n (+ m) shared; per expert k (m + n) + gate_k n (+ m)
    expected = 4 * 6 + 3 * (2 * (4 + 6) + 1 * 6) + (4 + 3 * 4 if bias else 0)
    assert expected == (118 if bias else 102)
    assert smile_linear_num_params(6, 4, 3, 2, 1, bias) == expected
    assert layer.num_params() == sum(p.numel() for p in layer.parameters()) == expected


def test_layer_validation(linears):
    pretrained, experts = linears
    with pytest.raises(FusionBenchError, match="top_k"):
        SmileMoELinear.from_linears(pretrained, experts, k=2, gate_k=2, top_k=4)
    layer = SmileMoELinear.from_linears(pretrained, experts, k=2, gate_k=2)
    with pytest.raises(FusionBenchError, match="do not fit"):
        SmileMoELinear(pretrained, layer.u, layer.svh[:, :, :3], layer.gate, layer.bias_delta)
    with pytest.raises(FusionBenchError, match="bias"):
        SmileMoELinear(pretrained, layer.u, layer.svh, layer.gate, None)
    # computing with .weight instead of calling the layer fails loudly
    assert layer.weight is None
    with pytest.raises(TypeError):
        torch.nn.functional.linear(torch.zeros(1, 4), layer.weight)
    assert "num_experts=3" in repr(layer)


# -- SmileUpscaling on a tiny MLP -------------------------------------------------------------
def mlp_pool(make_pool, perturb_norm: bool = False):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(IN, IN), nn.LayerNorm(IN), nn.Linear(IN, OUT)).eval()
    modules = {PRETRAINED: base}
    for i, first in enumerate(orthogonal_experts(base[0])):
        expert = copy.deepcopy(base)
        expert[0] = first
        if perturb_norm:
            with torch.no_grad():
                expert[1].weight.add_(torch.randn(IN, generator=_gen(10 + i)))
        modules[f"task{i}"] = expert
    return make_pool(n_experts=0, pretrained=False, extra=modules)


def test_method_reproduces_the_expert_of_the_input_subspace(make_pool):
    pool = mlp_pool(make_pool)
    method = SmileUpscaling(gate_k=2, k=2, top_k=1)
    model = method.run(pool)
    assert isinstance(model[0], SmileMoELinear) and model[0].num_experts == E
    assert type(model[2]) is nn.Linear  # every expert equals the pretrained layer: kept
    assert pool.loads == {PRETRAINED: 1, "task0": 1, "task1": 1, "task2": 1}  # streamed
    with torch.no_grad():
        for i in range(E):
            x = block_input(i, 4, seed=i)
            torch.testing.assert_close(model(x), pool._modules[f"task{i}"](x))
    # counts: pretrained 8*8+8 + 2*8 + 8*5+5 = 133; layer 0 gains 3 * (2*16 + 2*8 + 8) = 168
    assert method.extra_report() == {
        "params_pretrained": 133,
        "params_upscaled": 133 + 168,
        "params_ratio": (133 + 168) / 133,
        "layers_upscaled": 1,
        "layers_kept_pretrained": 1,
    }


@pytest.mark.parametrize("average", [False, True])
def test_non_upscaled_parameters(make_pool, average):
    pool = mlp_pool(make_pool, perturb_norm=True)
    model = SmileUpscaling(gate_k=2, k=2, average_experts=average).run(pool)
    norms = [pool._modules[n][1].weight for n in pool.names]
    expected = torch.stack(norms).mean(0) if average else pool._modules[PRETRAINED][1].weight
    torch.testing.assert_close(model[1].weight, expected)
    torch.testing.assert_close(model[1].bias, pool._modules[PRETRAINED][1].bias)


def test_target_modules(make_pool):
    pool = mlp_pool(make_pool)
    method = SmileUpscaling(target_modules=["2"])
    assert method.select_targets(pool._modules[PRETRAINED]) == ["2"]
    model = method.run(pool)  # layer 2's experts equal the pretrained one: nothing to upscale
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
    assert method.extra_report()["params_ratio"] == 1.0
    with pytest.raises(FusionBenchError, match="matches no nn.Linear"):
        SmileUpscaling(target_modules=["fc1"]).run(pool)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2)
            self.mlp = nn.Sequential(nn.Linear(4, 4))

    names = SmileUpscaling().select_targets(Block())
    assert names == ["mlp.0"]  # MultiheadAttention reads out_proj.weight: never upscaled
    assert SmileUpscaling(target_modules=["mlp.*"]).select_targets(Block()) == ["mlp.0"]
    with pytest.raises(FusionBenchError, match="MultiheadAttention"):
        SmileUpscaling(target_modules=["out_proj"]).select_targets(Block())


def test_errors(make_pool):
    with pytest.raises(FusionBenchError, match="top_k"):
        SmileUpscaling(top_k=4).run(mlp_pool(make_pool))
    with pytest.raises(FusionBenchError, match="at least one expert"):
        SmileUpscaling().run(make_pool(n_experts=0))
    for bad in ({"k": 0}, {"gate_k": -3}, {"top_k": 0}):
        with pytest.raises(FusionBenchError):
            SmileUpscaling(**bad)


# -- SmileUpscaling on a HF CLIPVisionModel ---------------------------------------------------
def tiny_clip_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    return CLIPVisionModel(cfg).eval()


def clip_pool(make_pool, n_experts=3):
    base = tiny_clip_vision()
    modules = {PRETRAINED: base}
    for i in range(n_experts):
        expert = copy.deepcopy(base)
        g = _gen(i)
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        modules[f"task{i}"] = expert
    return make_pool(n_experts=0, pretrained=False, extra=modules)


def test_clip_vision_model_end_to_end(make_pool):
    from transformers import CLIPVisionModel

    pool = clip_pool(make_pool)
    method = SmileUpscaling(gate_k=2, k=4, top_k=1)
    model = method.run(pool)
    assert isinstance(model, CLIPVisionModel)
    moe = {n for n, m in model.named_modules() if isinstance(m, SmileMoELinear)}
    projs = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
    assert moe == {
        f"encoder.layers.{i}.{p}" for i in (0, 1) for p in (*projs, "mlp.fc1", "mlp.fc2")
    }
    # the only plain linear layers left are the shared parts inside the MoE layers
    plain = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    assert plain == {f"{n}.pretrained" for n in moe}
    pixel_values = torch.randn(2, 3, 16, 16, generator=_gen(5))
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
        ref = pool._modules[PRETRAINED](pixel_values=pixel_values)
    assert out.pooler_output.shape == ref.pooler_output.shape == (2, 16)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape
    assert torch.isfinite(out.last_hidden_state).all()
    # per expert: q/k/v/out (16x16): 4*32 + 2*16 + 16; fc1 (32x16): 4*48 + 2*16 + 32;
    # fc2 (16x32): 4*48 + 2*32 + 16; times 3 experts and 2 blocks
    growth = 3 * 2 * (4 * (4 * 32 + 2 * 16 + 16) + (4 * 48 + 2 * 16 + 32) + (4 * 48 + 2 * 32 + 16))
    report = method.extra_report()
    assert report["params_pretrained"] == sum(p.numel() for p in ref_params(pool))
    assert report["params_upscaled"] == report["params_pretrained"] + growth
    assert report["params_ratio"] > 1.0 and report["layers_upscaled"] == 12


def ref_params(pool):
    return list(pool._modules[PRETRAINED].parameters())


def test_clip_single_full_rank_expert_is_reproduced(make_pool):
    """One expert, full rank, other parameters averaged (= that expert): the expert exactly."""
    pool = clip_pool(make_pool, n_experts=1)
    model = SmileUpscaling(gate_k=-1, k=-1, average_experts=True).run(pool)
    pixel_values = torch.randn(2, 3, 16, 16, generator=_gen(6))
    with torch.no_grad():
        out = model(pixel_values=pixel_values).last_hidden_state
        expected = pool._modules["task0"](pixel_values=pixel_values).last_hidden_state
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
