"""RegMean++: merge units, a hand-computed layer-by-layer merge, the CLIP pool."""

import copy

import pytest
import torch
from clip_helpers import data_pool, save_perturbed_experts
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.regmean import regmean_merge
from fusion_bench.method.regmean import RegMean
from fusion_bench.method.regmean_plusplus import RegMeanPlusPlus, merge_units
from fusion_bench.modelpool.base import BaseModelPool

D = 4


class DataPool(BaseModelPool):
    """In-memory models plus one input tensor per task; the task logits are the model output."""

    def __init__(self, modules, data):
        super().__init__({name: f"memory://{name}" for name in modules})
        self.modules, self.data = modules, data

    def _load(self, name, location):
        return copy.deepcopy(self.modules[name])

    def task_dataset(self, task, split="train"):
        x = self.data[task]
        return torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long))

    def task_logits(self, model, task, inputs):
        return model(inputs)


class Stack(nn.Module):
    """``x * scale`` -> residual blocks ``h + fc2(tanh(fc1(h)))`` -> linear head."""

    def __init__(self, n_blocks=2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(D))
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"fc1": nn.Linear(D, D), "fc2": nn.Linear(D, D)}) for _ in range(n_blocks)
        )
        self.head = nn.Linear(D, 2)

    @staticmethod
    def block(b, h):
        return h + b["fc2"](torch.tanh(b["fc1"](h)))

    def forward(self, x):
        h = x * self.scale
        for b in self.blocks:
            h = self.block(b, h)
        return self.head(h)


def _seeded(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return module.eval()


@pytest.fixture
def stack_pool():
    experts = {f"t{i}": _seeded(Stack(), i) for i in range(3)}
    g = torch.Generator().manual_seed(7)
    data = {t: torch.randn(9, D, generator=g) for t in experts}
    return DataPool(experts, data), experts, data


def _gram(x):
    return x.T @ x / x.shape[0]


def _avg(tensors):
    return sum(tensors) / len(tensors)


def test_merge_units():
    model = Stack(n_blocks=2)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    units = merge_units(model, linears, "block")
    assert [u.name for u in units] == ["blocks.0", "blocks.1", "head"]
    assert units[0].linears == ["blocks.0.fc1", "blocks.0.fc2"]
    assert units[2].keys == ["head.weight", "head.bias"]
    per_linear = merge_units(model, linears, "linear")
    assert [u.name for u in per_linear] == linears
    assert per_linear[0].keys == ["blocks.0.fc1.weight", "blocks.0.fc1.bias"]
    with pytest.raises(FusionBenchError, match="granularity"):
        merge_units(model, linears, "layer")


@pytest.mark.parametrize("granularity", ["block", "linear"])
def test_layer_by_layer_merge_by_hand(stack_pool, granularity):
    pool, experts, data = stack_pool
    alpha = 0.9
    method = RegMeanPlusPlus(9, alpha, batch_size=4, granularity=granularity)
    merged = method.run(pool)
    tasks = list(experts)

    def merge(layer, inputs):
        w = [experts[t].get_submodule(layer).weight for t in tasks]
        return regmean_merge(w, [_gram(inputs[t]) for t in tasks], alpha), _avg(
            [experts[t].get_submodule(layer).bias for t in tasks]
        )

    with torch.no_grad():
        # the input scale is outside every unit: averaged up front
        h = {t: data[t] * _avg([e.scale for e in experts.values()]) for t in tasks}
        for i in range(2):
            w1, b1 = merge(f"blocks.{i}.fc1", h)
            if granularity == "block":  # fc2 sees expert t's own fc1 (intra-block)
                mid = {t: torch.tanh(experts[t].blocks[i]["fc1"](h[t])) for t in tasks}
            else:  # fc2 sees the merged fc1
                mid = {t: torch.tanh(h[t] @ w1.T + b1) for t in tasks}
            w2, b2 = merge(f"blocks.{i}.fc2", mid)
            torch.testing.assert_close(merged.blocks[i]["fc1"].weight, w1)
            torch.testing.assert_close(merged.blocks[i]["fc2"].weight, w2)
            torch.testing.assert_close(merged.blocks[i]["fc2"].bias, b2)
            h = {t: h[t] + torch.tanh(h[t] @ w1.T + b1) @ w2.T + b2 for t in tasks}
        w, b = merge("head", h)
        torch.testing.assert_close(merged.head.weight, w)
        torch.testing.assert_close(merged.head.bias, b)
    assert method.extra_report()["units"] == (3 if granularity == "block" else 5)


def test_the_first_layer_is_plain_regmean():
    experts = {f"t{i}": _seeded(nn.Linear(D, 3), i) for i in range(2)}
    g = torch.Generator().manual_seed(3)
    pool = DataPool(experts, {t: torch.randn(8, D, generator=g) for t in experts})
    plus = RegMeanPlusPlus(8, 0.95).run(pool)
    plain = RegMean(8, 0.95).run(pool)
    for k, v in plus.state_dict().items():
        torch.testing.assert_close(v, plain.state_dict()[k])


# -- the CLIP pool ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expert_dirs(clip_dir, tmp_path_factory):
    """Vision experts ``a`` and ``b``: the tiny CLIP's vision tower, perturbed."""
    return save_perturbed_experts(clip_dir, tmp_path_factory.mktemp("regmean_pp_experts"), seed=30)


@pytest.fixture
def clip_pool(clip_dir, dataset_dirs, expert_dirs, tmp_path):
    return data_pool(clip_dir, dataset_dirs, expert_dirs, tmp_path / "heads")


def test_clip_pool_units_are_the_encoder_layers(clip_pool):
    model = clip_pool.load_model("a")
    units = merge_units(model, clip_pool.linear_names(model), "block")
    assert [u.name for u in units] == ["encoder.layers.0", "encoder.layers.1"]
    assert "encoder.layers.0.layer_norm1.weight" in units[0].keys
    assert units[1].linears[-1] == "encoder.layers.1.mlp.fc2"


@pytest.mark.parametrize("granularity", ["block", "linear"])
def test_clip_pool_merge(clip_pool, granularity):
    method = RegMeanPlusPlus(num_regmean_examples=4, batch_size=2, granularity=granularity)
    merged = method.run(clip_pool).state_dict()
    a, b = clip_pool.load_state_dict("a"), clip_pool.load_state_dict("b")
    for k, v in merged.items():
        assert torch.isfinite(v.float()).all(), k
    for k in ("post_layernorm.weight", "encoder.layers.1.layer_norm2.bias"):
        torch.testing.assert_close(merged[k], (a[k] + b[k]) / 2)
    plain = RegMean(num_regmean_examples=4, batch_size=2).run(clip_pool).state_dict()
    fc2 = "encoder.layers.1.mlp.fc2.weight"
    assert not torch.allclose(merged[fc2], plain[fc2])  # inputs came from the merged layers
    report = method.extra_report()
    assert report["units"] == (2 if granularity == "block" else 12)
    assert report["regmean_layers"] == 12 and report["averaged_linear_layers"] == 0


def test_errors():
    with pytest.raises(FusionBenchError, match="granularity"):
        RegMeanPlusPlus(granularity="layer")
