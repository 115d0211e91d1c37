"""AdaMerging: functional merge, entropy training, artifacts, and the CLIP pool end to end."""

import copy
import gc

import pytest
import torch
from clip_helpers import CLASSNAMES, task_cfg
from torch import nn

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.method.adamerging import AdaMerging
from fusion_bench.method.task_arithmetic import TaskArithmetic
from fusion_bench.modelpool.base import BaseModelPool

TASK_CLASSES = {"t0": slice(0, 3), "t1": slice(3, 5)}


class DataPool(BaseModelPool):
    """Tiny MLP experts with unlabelled data; task ``t`` reads its slice of the 5 outputs."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        base = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))
        self._modules_ = {PRETRAINED: base}
        for i, name in enumerate(TASK_CLASSES):
            expert = copy.deepcopy(base)
            with torch.no_grad():
                for p in expert.parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
            self._modules_[name] = expert
        super().__init__({n: f"memory://{n}" for n in self._modules_})
        g = torch.Generator().manual_seed(seed + 10)
        self._data = {
            t: torch.utils.data.TensorDataset(torch.randn(40, 4, generator=g), torch.zeros(40))
            for t in TASK_CLASSES
        }

    def _load(self, name, location):
        return copy.deepcopy(self._modules_[name])

    def task_dataset(self, task, split="train"):
        assert split == "test"
        return self._data[task]

    def task_logits(self, model, task, inputs):
        return model(inputs)[:, TASK_CLASSES[task]]


def _assert_same_weights(a: nn.Module, b: nn.Module, **tol):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], **tol)


@pytest.mark.parametrize("mode", ["task_wise", "layer_wise"])
def test_zero_steps_is_task_arithmetic(mode):
    pool = DataPool()
    ada = AdaMerging(mode=mode, init_value=0.3, max_steps=0)
    _assert_same_weights(ada.run(pool), TaskArithmetic(scaling_factor=0.3).run(pool))
    shape = (2,) if mode == "task_wise" else (2, 4)  # 2 experts x 4 parameter tensors
    assert tuple(ada.artifacts()["coefficients"].shape) == shape
    assert ada.extra_report()["mean_lambda_per_task"] == pytest.approx({"t0": 0.3, "t1": 0.3})


@pytest.mark.parametrize("mode", ["task_wise", "layer_wise"])
def test_training_lowers_entropy_and_reports(mode):
    pool = DataPool()
    ada = AdaMerging(mode=mode, lr=0.05, max_steps=20, batch_size=8)
    model = ada.run(pool)
    info = ada.extra_report()
    assert info["steps"] == 20 and info["trained"] and info["mode"] == mode
    assert info["loss_last"] < info["loss_first"]
    lam = ada.artifacts()["coefficients"]
    assert not torch.allclose(lam, torch.full_like(lam, 0.3))
    assert ((lam >= 0) & (lam <= 1)).all()  # clamp_weights=True by default
    # the returned model is the plain pretrained architecture holding theta_0 + sum lambda tau
    assert type(model) is nn.Sequential and all(p.requires_grad for p in model.parameters())


def test_weights_path_round_trip_skips_training(tmp_path):
    from safetensors.torch import save_file

    pool = DataPool()
    ada = AdaMerging(lr=0.05, max_steps=5, batch_size=8)
    trained = ada.run(pool)
    path = tmp_path / "method_artifacts.safetensors"
    save_file(ada.artifacts(), path)
    loaded = AdaMerging(max_steps=1000, weights_path=str(path))
    _assert_same_weights(loaded.run(pool), trained, rtol=0, atol=0)
    assert loaded.extra_report()["trained"] is False and loaded.extra_report()["steps"] == 0
    # a task-wise file does not fit a layer-wise run: one-line error naming both shapes
    save_file({"coefficients": torch.zeros(2)}, tmp_path / "tw.safetensors")
    with pytest.raises(FusionBenchError, match=r"shape \(2,\).*\(2, 4\)"):
        AdaMerging(weights_path=str(tmp_path / "tw.safetensors")).run(pool)
    with pytest.raises(FusionBenchError, match="not a file"):
        AdaMerging(weights_path=str(tmp_path / "missing.safetensors")).run(pool)


def test_bad_mode_is_an_error():
    with pytest.raises(FusionBenchError, match="mode"):
        AdaMerging(mode="column_wise")


def test_memory_is_flat_over_steps():
    """Live tensors and optimiser state do not grow with the number of steps."""
    from lightning.fabric import Fabric

    from fusion_bench.method.test_time import minimise_entropy

    pool = DataPool()
    module = AdaMerging().build(pool)
    optimizer = torch.optim.Adam([module.coefficients], lr=1e-3)
    live, state = [], []

    def count(step):
        gc.collect()
        live.append(sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)))
        state.append(sum(len(s) for s in optimizer.state.values()))

    fabric = Fabric(accelerator="cpu", devices=1)
    history = minimise_entropy(
        fabric, module, optimizer, pool, list(TASK_CLASSES), max_steps=8, batch_size=4,
        after_step=count,
    )  # fmt: skip
    assert all(isinstance(h, float) for h in history)
    assert len(set(live[1:])) == 1, live
    assert len(set(state)) == 1 and state[0] == 3  # Adam: step, exp_avg, exp_avg_sq


# -- the CLIP fixture pool ---------------------------------------------------------------------
@pytest.fixture
def clip_pool(clip_dir, dataset_dirs, tmp_path):
    """Tiny CLIP pool: experts ``a`` / ``b`` are perturbed copies of the tiny vision tower."""
    from transformers import CLIPVisionModel

    from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool

    models = {PRETRAINED: str(clip_dir)}
    for i, name in enumerate(CLASSNAMES):
        vis = CLIPVisionModel.from_pretrained(clip_dir)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in vis.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        vis.save_pretrained(tmp_path / f"expert_{name}")
        models[name] = str(tmp_path / f"expert_{name}")
    tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
    return CLIPVisionModelPool(models, tasks=tasks, head_cache_dir=str(tmp_path / "heads"))


@pytest.mark.parametrize("mode", ["task_wise", "layer_wise"])
def test_clip_pool_two_steps(clip_pool, mode):
    from transformers import CLIPVisionModel

    ada = AdaMerging(mode=mode, max_steps=2, batch_size=4)
    model = ada.run(clip_pool)
    assert isinstance(model, CLIPVisionModel)
    assert ada.extra_report()["steps"] == 2
    n_float = sum(1 for v in model.state_dict().values() if v.is_floating_point())
    assert ada.artifacts()["coefficients"].shape == ((2,) if mode == "task_wise" else (2, n_float))
    x = torch.stack([clip_pool.task_dataset("a", "test")[i][0] for i in range(2)])
    with torch.no_grad():
        assert torch.isfinite(clip_pool.task_logits(model, "a", x)).all()
