"""WeightEnsemblingMoE: task arithmetic at constant routing, per-sample routing, gradients."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from fusion_bench.errors import FusionBenchError
from fusion_bench.models.we_moe import WeightEnsemblingMoE, WeightEnsemblingRouter

D, H, N = 4, 6, 3


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D, H)
        self.fc2 = nn.Linear(H, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


@pytest.fixture
def mlps():
    torch.manual_seed(0)
    base = MLP()
    experts = []
    for _ in range(N):
        e = copy.deepcopy(base)
        with torch.no_grad():
            for p in e.parameters():
                p.add_(torch.randn_like(p))
        experts.append(e)
    return base, experts


def merged_mlp(base: nn.Module, experts, weights) -> nn.Module:
    """``theta_0 + sum_i w_i (theta_i - theta_0)`` as a plain module (the reference)."""
    out = copy.deepcopy(base)
    with torch.no_grad():
        for name, p in out.named_parameters():
            p0 = base.get_parameter(name)
            p.copy_(
                p0
                + sum(
                    float(w) * (e.get_parameter(name) - p0)
                    for w, e in zip(weights, experts, strict=True)
                )
            )
    return out


def set_linear_router(moe: WeightEnsemblingMoE, slope, bias) -> None:
    """Make the router ``r(h) = bias + slope * h[..., 0]`` (a depth-1 router, hand-set)."""
    moe.router = WeightEnsemblingRouter(D, N, num_layers=1)
    last = moe.router.layers[0]
    with torch.no_grad():
        last.weight.zero_()
        last.weight[:, 0] = torch.tensor(slope)
        last.bias.copy_(torch.tensor(bias))


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_router_at_init_outputs_init_lambda(layers):
    router = WeightEnsemblingRouter(D, N, num_layers=layers, init_lambda=0.7)
    out = router(torch.randn(2, 5, D))
    torch.testing.assert_close(out, torch.full((2, 5, N), 0.7))
    assert sum(isinstance(m, nn.Linear) for m in router.modules()) == layers


@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("shape", [(5, D), (2, 5, D), (2, 3, 5, D)])
def test_constant_router_is_task_arithmetic(mlps, layers, shape):
    base, experts = mlps
    moe = WeightEnsemblingMoE.from_experts(
        base, experts, init_lambda=0.4, router_hidden_layers=layers
    )
    x = torch.randn(*shape)
    expected = merged_mlp(base, experts, [0.4] * N)(x)
    torch.testing.assert_close(moe(x), expected)


def test_per_sample_routing_equals_separate_merged_mlps(mlps):
    base, experts = mlps
    moe = WeightEnsemblingMoE.from_experts(base, experts)
    slope, bias = [1.0, -0.5, 0.25], [0.1, 0.2, 0.3]
    set_linear_router(moe, slope, bias)
    x = torch.randn(2, 4, D)
    x[0, :, 0] = 0.0  # sample 0: weights = bias
    x[1, :, 0] = torch.tensor([0.0, 2.0, 4.0, 2.0])  # sample 1: token mean 2 -> bias + 2 slope
    w0 = bias
    w1 = [b + 2 * s for b, s in zip(bias, slope, strict=True)]
    torch.testing.assert_close(moe.routing_weights(x), torch.tensor([w0, w1]))
    expected = torch.stack(
        [merged_mlp(base, experts, w0)(x[0]), merged_mlp(base, experts, w1)(x[1])]
    )
    out = moe(x)
    torch.testing.assert_close(out, expected)
    # the two samples really are merged differently
    assert not torch.allclose(merged_mlp(base, experts, w0)(x[1]), out[1])
    # extra leading dims: the same samples arranged [2, 1, tokens, D]
    torch.testing.assert_close(moe(x[:, None]), expected[:, None])


def test_batch_reduce_shares_the_mean_routing_weights(mlps):
    base, experts = mlps
    moe = WeightEnsemblingMoE.from_experts(base, experts, batch_reduce=True)
    slope, bias = [1.0, -0.5, 0.25], [0.1, 0.2, 0.3]
    set_linear_router(moe, slope, bias)
    x = torch.randn(2, 4, D)
    x[0, :, 0], x[1, :, 0] = 0.0, 2.0  # per-sample weights bias, bias + 2 slope; mean bias + slope
    mean = [b + s for b, s in zip(bias, slope, strict=True)]
    torch.testing.assert_close(moe(x), merged_mlp(base, experts, mean)(x))


def test_only_the_router_gets_gradients_and_they_match_a_loop(mlps):
    base, experts = mlps
    moe = WeightEnsemblingMoE.from_experts(base, experts)
    with torch.no_grad():  # move the router off its constant init so every layer matters
        for p in moe.router.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 5, D)
    moe(x).square().sum().backward()
    for name, p in moe.named_parameters():
        assert (p.grad is not None) == name.startswith("router."), name
    assert not any(p.requires_grad for p in moe.pretrained.parameters())
    vmapped = {n: p.grad.clone() for n, p in moe.router.named_parameters()}
    # reference: a Python loop over samples with explicitly merged weights
    moe.zero_grad()
    total = 0.0
    for xb in x:
        params = moe.merged_params(moe.routing_weights(xb))
        total = total + functional_call(moe.pretrained, params, (xb,)).square().sum()
    total.backward()
    for n, p in moe.router.named_parameters():
        torch.testing.assert_close(p.grad, vmapped[n])


def test_validation_and_bookkeeping(mlps):
    base, experts = mlps
    tvs = {k: torch.zeros(N, *v.shape) for k, v in base.state_dict().items()}
    with pytest.raises(FusionBenchError, match="not a floating-point entry"):
        WeightEnsemblingMoE(base, {**tvs, "fc3.weight": torch.zeros(N, 2)})
    with pytest.raises(FusionBenchError, match="expected"):
        WeightEnsemblingMoE(base, {**tvs, "fc1.bias": torch.zeros(N + 1, H)})
    with pytest.raises(FusionBenchError, match="at least one"):
        WeightEnsemblingMoE(base, {})
    with pytest.raises(FusionBenchError, match="tokens"):
        WeightEnsemblingMoE(base, tvs)(torch.zeros(D))
    with pytest.raises(FusionBenchError, match="hidden_size"):
        WeightEnsemblingMoE(nn.Sequential(nn.LayerNorm(D)), {"0.weight": torch.zeros(N, D)})
    tvs["fc1.bias"][1, :2] = 1.0
    moe = WeightEnsemblingMoE(base, tvs)
    assert moe.num_task_vector_nonzeros() == 2
    torch.testing.assert_close(moe.task_vector("fc1.bias"), tvs["fc1.bias"])
    assert "num_experts=3" in repr(moe)


def test_router_init_is_seeded_by_its_generator():
    def make():
        return WeightEnsemblingRouter(
            D, N, num_layers=2, generator=torch.Generator().manual_seed(3)
        )

    torch.manual_seed(0)
    a = make()
    torch.manual_seed(1)  # the global RNG does not matter
    b = make()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert a.layers[0].weight.std() < 0.05  # the reference's N(0, 0.01^2) hidden init


def test_inference_mode_forward(mlps):
    base, experts = mlps
    moe = WeightEnsemblingMoE.from_experts(base, experts, init_lambda=0.2)
    x = torch.randn(3, 5, D)
    with torch.inference_mode():
        out = moe(x)
    torch.testing.assert_close(out, merged_mlp(base, experts, [0.2] * N)(x).detach())
