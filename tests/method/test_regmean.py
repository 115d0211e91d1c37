"""RegMean end to end: equals the stacked least squares on a linear model; CLIP pool runs."""

import copy

import pytest
import torch
from clip_helpers import data_pool, save_perturbed_experts
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.regmean import regmean_merge
from fusion_bench.method._activations import GramCollector, task_examples
from fusion_bench.method.regmean import RegMean
from fusion_bench.modelpool.base import BaseModelPool
from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool


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


def _seeded(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module.eval()


def test_single_linear_model_is_the_stacked_least_squares():
    experts = {f"t{i}": _seeded(nn.Linear(4, 3), i) for i in range(2)}
    g = torch.Generator().manual_seed(9)
    data = {t: torch.randn(10, 4, generator=g) for t in experts}
    pool = DataPool(experts, data)
    merged = RegMean(num_regmean_examples=10, reduce_non_diagonal_ratio=1.0, batch_size=4).run(pool)
    a = torch.cat([data[t] for t in experts]).double()
    b = torch.cat([data[t] @ experts[t].weight.T for t in experts]).double()
    expected = torch.linalg.lstsq(a, b).solution.T.float()
    torch.testing.assert_close(merged.weight, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged.bias, (experts["t0"].bias + experts["t1"].bias) / 2)


def test_identical_data_and_identical_experts_are_fixed_points():
    expert = _seeded(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)), 0)
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    pool = DataPool({"t0": expert, "t1": expert}, {"t0": x, "t1": x})
    merged = RegMean(12, 0.9).run(pool)
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(v, expert.state_dict()[k], atol=1e-5, rtol=1e-5)


def test_layers_without_inputs_are_averaged_with_a_warning():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    experts = {f"t{i}": _seeded(Unused(), i) for i in range(2)}
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    method = RegMean(6, 0.95)
    with pytest.warns(RuntimeWarning, match="never received an input"):
        merged = method.run(DataPool(experts, {"t0": x, "t1": x}))
    avg = (experts["t0"].spare.weight + experts["t1"].spare.weight) / 2
    torch.testing.assert_close(merged.spare.weight, avg)
    assert method.extra_report() == {"averaged_linear_layers": 1, "regmean_layers": 1}


def test_gram_collector_flattens_tokens_and_averages_rows():
    layer = nn.Linear(3, 2)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3))  # [batch, tokens, dim]
    with GramCollector(layer, [""]) as collector:
        collector.forward(layer, x)
        collector.forward(layer, x[:1])
    rows = torch.cat([x.reshape(-1, 3), x[:1].reshape(-1, 3)])
    torch.testing.assert_close(collector.grams()[""], rows.T @ rows / 15)


def test_gram_collector_stops_the_forward_once_all_layers_ran():
    calls = []
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].register_forward_hook(lambda *a: calls.append(1))
    with GramCollector(model, ["0"], stop_early=True) as collector:
        collector.forward(model, torch.ones(1, 2))
    assert calls == [] and "0" in collector.grams()


# -- the CLIP pool ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expert_dirs(clip_dir, tmp_path_factory):
    """Vision experts ``a`` and ``b``: the tiny CLIP's vision tower, perturbed."""
    return save_perturbed_experts(clip_dir, tmp_path_factory.mktemp("regmean_experts"), seed=20)


@pytest.fixture
def clip_pool(clip_dir, dataset_dirs, expert_dirs, tmp_path):
    return data_pool(clip_dir, dataset_dirs, expert_dirs, tmp_path / "heads")


def test_clip_pool_merge_matches_hand_collected_grams(clip_pool):
    method = RegMean(num_regmean_examples=5, reduce_non_diagonal_ratio=0.95, batch_size=2)
    merged = method.run(clip_pool)
    layer = "encoder.layers.1.mlp.fc1"
    weights, grams = [], []
    for task in clip_pool.names:
        expert = clip_pool.load_model(task)
        inputs = []
        handle = expert.get_submodule(layer).register_forward_hook(
            lambda m, a, o, inputs=inputs: inputs.append(a[0].reshape(-1, a[0].shape[-1]))
        )
        with torch.no_grad():
            for x in task_examples(clip_pool, task, 5, 5, 0):
                clip_pool.task_logits(expert, task, x)
        handle.remove()
        xs = torch.cat(inputs)
        weights.append(expert.get_submodule(layer).weight)
        grams.append(xs.T @ xs / xs.shape[0])
    expected = regmean_merge(weights, grams, 0.95)
    torch.testing.assert_close(merged.get_submodule(layer).weight, expected, atol=1e-5, rtol=1e-4)
    a, b = clip_pool.load_state_dict("a"), clip_pool.load_state_dict("b")
    for k in ("post_layernorm.weight", f"{layer}.bias", "embeddings.patch_embedding.weight"):
        torch.testing.assert_close(merged.state_dict()[k], (a[k] + b[k]) / 2)
    n_linear = len(clip_pool.linear_names(merged))
    assert method.extra_report() == {"averaged_linear_layers": 0, "regmean_layers": n_linear}


def test_errors(clip_dir):
    with pytest.raises(FusionBenchError, match=r"\[0, 1\]"):
        RegMean(reduce_non_diagonal_ratio=1.5)
    with pytest.raises(FusionBenchError, match=">= 1"):
        RegMean(num_regmean_examples=0)
    no_data = CLIPVisionModelPool({"_pretrained_": str(clip_dir), "a": str(clip_dir)})
    with pytest.raises(FusionBenchError, match="task data"):
        RegMean(2).run(no_data)
