"""TwinLinear / TwinMergingModel: routing through the context, exactness, router on features."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.twin import exclusive_factors
from fusion_bench.models.twin_moe import (
    TWIN_MODULES,
    TwinConv,
    TwinEmbedding,
    TwinLinear,
    TwinMergingModel,
    TwinRouter,
    current_routing,
    extract_features,
    routing,
)

T = 3


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def perturbed(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    out = copy.deepcopy(model)
    g = _gen(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out


def twin_of(shared: nn.Module, experts: list[nn.Module], rank: int = -1):
    """The Twin wrapper of ``shared`` (linear, conv or embedding) over ``experts``."""
    kind = {nn.Linear: "linear", nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Embedding: "embedding"}
    with torch.no_grad():
        factors = [
            exclusive_factors(
                e.weight,
                shared.weight,
                rank,
                getattr(e, "bias", None),
                getattr(shared, "bias", None),
            )
            for e in experts
        ]
    return TWIN_MODULES[kind[type(shared)]].from_factors(copy.deepcopy(shared), factors)


def one_hot(batch: int, t: int) -> torch.Tensor:
    w = torch.zeros(batch, T, dtype=torch.float64)
    w[:, t] = 1
    return w


@pytest.fixture
def linears():
    torch.manual_seed(0)
    shared = nn.Linear(6, 4).double()
    return shared, [perturbed(shared, i) for i in range(T)]


# -- TwinLinear --------------------------------------------------------------------------------
def test_twin_linear_routing(linears):
    shared, experts = linears
    layer = twin_of(shared, experts)
    x = torch.randn(5, 2, 6, generator=_gen(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), shared(x))  # outside a routed forward: shared
        for t, e in enumerate(experts):
            with routing(one_hot(5, t)):
                torch.testing.assert_close(layer(x), e(x))
        with routing(torch.full((5, T), 1 / T, dtype=torch.float64)):
            mean = copy.deepcopy(shared)
            mean.weight.copy_(sum(e.weight for e in experts) / T)
            mean.bias.copy_(sum(e.bias for e in experts) / T)
            torch.testing.assert_close(layer(x), mean(x))
        # every sample of a batch uses its own routing
        w = torch.stack([one_hot(1, t)[0] for t in (2, 0, 1, 1, 0)])
        with routing(w):
            y = layer(x)
        for b, t in enumerate((2, 0, 1, 1, 0)):
            torch.testing.assert_close(y[b], experts[t](x[b]))


def test_twin_linear_state_and_errors(linears):
    shared, experts = linears
    layer = twin_of(shared, experts, rank=2)
    assert layer.rank == 2 and layer.num_tasks == T
    assert layer.weight is layer.shared.weight and layer.bias is layer.shared.bias  # dtype reads
    keys = set(layer.state_dict())
    assert {"shared.weight", "shared.bias", "u_cat", "svh_cat", "bias_delta"} == keys
    assert layer.num_params() == 6 * 4 + 4 + T * (2 * (6 + 4) + 4)
    assert not any(p is layer.u_cat for p in layer.parameters())  # factors are not trained
    with pytest.raises(FusionBenchError, match="tasks"), routing(torch.ones(2, T + 1)):
        layer(torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(FusionBenchError, match="batch"), routing(torch.ones(3, T)):
        layer(torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(FusionBenchError, match="bias"):
        TwinLinear(nn.Linear(6, 4, bias=False), layer.u_cat, layer.svh_cat, layer.bias_delta, T)


@pytest.mark.parametrize(
    "shared,make_x",
    [
        (
            nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1),
            lambda g: torch.randn(5, 3, 7, 6, generator=g),
        ),
        (
            nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular"),
            lambda g: torch.randn(5, 3, 8, generator=g),
        ),
        (nn.Embedding(9, 4), lambda g: torch.randint(0, 9, (5, 6), generator=g)),
    ],
    ids=["conv2d", "conv1d-circular", "embedding"],
)
def test_twin_conv_and_embedding_routing(shared, make_x):
    shared = shared.double()
    experts = [perturbed(shared, i) for i in range(T)]
    layer = twin_of(shared, experts)
    x = make_x(_gen(7))
    x = x.double() if x.is_floating_point() else x
    with torch.no_grad():
        torch.testing.assert_close(layer(x), shared(x))
        for t, e in enumerate(experts):
            with routing(one_hot(5, t)):
                torch.testing.assert_close(layer(x), e(x))
        mean = copy.deepcopy(shared)
        for name, p in mean.named_parameters():
            p.copy_(sum(e.get_parameter(name) for e in experts) / T)
        with routing(torch.full((5, T), 1 / T, dtype=torch.float64)):
            torch.testing.assert_close(layer(x), mean(x))


def test_twin_conv_and_embedding_refuse_unsupported_layers():
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(FusionBenchError, match="groups=1"):
        TwinConv(grouped, torch.zeros(4, T), torch.zeros(T, 2, 3, 3), torch.zeros(T, 4), T)
    with pytest.raises(FusionBenchError, match="max_norm"):
        TwinEmbedding(
            nn.Embedding(5, 3, max_norm=1.0), torch.zeros(5, T), torch.zeros(T, 3), None, T
        )


def test_routing_context_is_restored():
    assert current_routing() is None
    w = torch.ones(1, T)
    with pytest.raises(RuntimeError), routing(w):
        assert current_routing() is w
        with routing(None):
            assert current_routing() is None
        assert current_routing() is w
        raise RuntimeError
    assert current_routing() is None


# -- features ------------------------------------------------------------------------------
def test_extract_features():
    hidden = torch.arange(24.0).reshape(2, 3, 4)
    pooled = torch.ones(2, 4)
    both = SimpleNamespace(pooler_output=pooled, last_hidden_state=hidden)
    only_hidden = SimpleNamespace(pooler_output=None, last_hidden_state=hidden)
    assert extract_features(both, "auto") is pooled
    assert extract_features(both, "pooler") is pooled
    torch.testing.assert_close(extract_features(both, "mean"), hidden.mean(1))
    torch.testing.assert_close(extract_features(only_hidden, "auto"), hidden.mean(1))
    torch.testing.assert_close(extract_features(hidden), hidden.mean(1))  # a plain tensor
    torch.testing.assert_close(extract_features((pooled, hidden)), pooled)  # tuple: first item
    with pytest.raises(FusionBenchError, match="router_feature=mean"):
        extract_features(only_hidden, "pooler")
    with pytest.raises(FusionBenchError, match="must be one of"):
        extract_features(both, "cls")


def test_mean_features_skip_padding():
    hidden = torch.arange(24.0).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = extract_features(SimpleNamespace(last_hidden_state=hidden), "mean", mask)
    torch.testing.assert_close(out[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(out[1], hidden[1, 0])
    padded = hidden.clone()
    padded[0, 2] = 1e6  # what sits under padding does not matter
    again = extract_features(SimpleNamespace(last_hidden_state=padded), "mean", mask)
    torch.testing.assert_close(again, out)


# -- the whole model -----------------------------------------------------------------------
def _linear_backbone(seed: int) -> nn.Module:
    """Only linear layers carry parameters: a routed forward can reproduce an expert exactly."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 5))


def _twin_model(shared: nn.Module, experts: list[nn.Module], router: nn.Module, rank: int = -1):
    backbone = copy.deepcopy(shared)
    for name, m in list(backbone.named_modules()):
        if isinstance(m, nn.Linear):
            layer = twin_of(m, [e.get_submodule(name) for e in experts], rank)
            setattr(backbone, name, layer)
    return TwinMergingModel(backbone, router, feature="auto")


class RecordingRouter(nn.Module):
    """Returns fixed logits and records the features it was given."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.seen: list[torch.Tensor] = []

    def forward(self, features):
        self.seen.append(features)
        return self.logits.expand(features.shape[0], -1)


class SeqBackbone(nn.Module):
    """Embedding -> Conv1d -> Linear: every parameter lives in a routable layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)

    def forward(self, ids):
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2))).transpose(1, 2)
        return self.head(h)  # [B, L, 4]: router features = mean over tokens


def test_one_hot_full_rank_model_with_conv_and_embedding_is_the_expert():
    torch.manual_seed(0)
    shared = SeqBackbone().double()
    experts = [perturbed(shared, 20 + i, 0.3) for i in range(T)]
    backbone = copy.deepcopy(shared)
    for name in ("embed", "conv", "head"):
        layer = twin_of(shared.get_submodule(name), [e.get_submodule(name) for e in experts])
        setattr(backbone, name, layer)
    model = TwinMergingModel(backbone, nn.Identity(), feature="mean")
    ids = torch.randint(0, 11, (4, 5), generator=_gen(8))
    with torch.no_grad():
        for t, e in enumerate(experts):
            torch.testing.assert_close(model.forward_routed(one_hot(4, t), ids), e(ids))
        torch.testing.assert_close(model.features(ids), shared(ids).mean(1))


@pytest.fixture
def backbones():
    shared = _linear_backbone(0).double()
    return shared, [perturbed(shared, 10 + i, 0.3) for i in range(T)]


def test_one_hot_full_rank_model_is_the_expert(backbones):
    shared, experts = backbones
    model = _twin_model(shared, experts, nn.Identity())
    x = torch.randn(7, 4, generator=_gen(2), dtype=torch.float64)
    with torch.no_grad():
        for t, e in enumerate(experts):
            torch.testing.assert_close(model.forward_routed(one_hot(7, t), x), e(x))
        torch.testing.assert_close(model.features(x), shared(x))  # router input: shared model


def test_uniform_routing_is_the_mean_model(backbones):
    shared, experts = backbones
    model = _twin_model(shared, experts, nn.Identity())
    mean = copy.deepcopy(shared)
    with torch.no_grad():
        for name, p in mean.named_parameters():
            p.copy_(sum(e.get_parameter(name) for e in experts) / T)
        x = torch.randn(3, 4, generator=_gen(3), dtype=torch.float64)
        uniform = torch.full((3, T), 1 / T, dtype=torch.float64)
        torch.testing.assert_close(model.forward_routed(uniform, x), mean(x))


def test_forward_routes_on_shared_features(backbones):
    shared, experts = backbones
    logits = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    router = RecordingRouter(logits)
    model = _twin_model(shared, experts, router, rank=2)
    x = torch.randn(4, 4, generator=_gen(4), dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        assert len(router.seen) == 1
        torch.testing.assert_close(router.seen[0], shared(x))
        w = model.routing_weights(x)
        torch.testing.assert_close(w, torch.softmax(logits, -1).float().expand(4, -1))
        torch.testing.assert_close(y, model.forward_routed(w, x))
    assert current_routing() is None


def test_router_shapes_and_determinism():
    torch.manual_seed(0)
    router = TwinRouter(8, T).eval()
    assert router(torch.randn(5, 8)).shape == (5, T)
    assert router.net[0].out_features == 16  # hidden = 2 d, as in the reference
    assert TwinRouter(8, T, hidden=4).net[-1].in_features == 4
