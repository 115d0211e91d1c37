"""Concrete subspace learning (concrete_task_arithmetic, concrete_adamerging)."""

import gc

import pytest
import torch
from test_adamerging import TASK_CLASSES, DataPool, _assert_same_weights, clip_pool  # noqa: F401

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.adamerging import AdaMerging
from fusion_bench.method.concrete_adamerging import ConcreteAdaMerging
from fusion_bench.method.concrete_merging import ConcreteMask, ConcreteMerging
from fusion_bench.method.concrete_task_arithmetic import ConcreteTaskArithmetic
from fusion_bench.method.task_arithmetic import TaskArithmetic

ALL_ONES = {"initial_logits": 50.0, "eval_mask": "hard"}  # hard mask of ones: no masking


def test_mask_sample_is_shared_until_resampled():
    mask = ConcreteMask([torch.Size([3, 2]), torch.Size([4])], temperature=0.5, seed=1)
    a, b = mask(), mask()
    assert all(
        torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )  # every task of a step: one sample
    assert all(abs(x.mean().item() - 1) < 1e-5 for x in a)  # rescaled to mean one
    mask.resample()
    assert not torch.equal(mask()[0], a[0])
    again = ConcreteMask([torch.Size([3, 2]), torch.Size([4])], temperature=0.5, seed=1)
    assert torch.equal(again()[0], a[0])  # seeded


def test_gradients_reach_only_the_mask_logits():
    pool = DataPool()
    method = ConcreteTaskArithmetic()
    module = method.build(pool)
    method._train_only(module, "mask")
    pool.task_logits(module, "t0", torch.randn(6, 4)).softmax(-1).max(-1).values.sum().backward()
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("mask.logits.") for n in trainable)
    assert all(p.grad is not None for p in module.mask.parameters())
    assert module.coefficients.grad is None
    assert all(p.grad is None for p in module.base.parameters())


def test_all_ones_mask_reduces_to_task_arithmetic():
    pool = DataPool()
    model = ConcreteTaskArithmetic(max_steps=0, **ALL_ONES).run(pool)
    _assert_same_weights(model, TaskArithmetic(scaling_factor=0.3).run(pool))


def test_all_ones_mask_reduces_to_adamerging():
    pool = DataPool()
    kw = dict(lr=0.05, batch_size=8, clamp_weights=True)
    concrete = ConcreteAdaMerging(
        max_steps=0, adamerging_steps=4, adamerging_lr=kw["lr"], batch_size=8, clamp_weights=True,
        **ALL_ONES,
    )  # fmt: skip
    ada = AdaMerging(mode="layer_wise", max_steps=4, **kw)
    _assert_same_weights(concrete.run(pool), ada.run(pool))
    torch.testing.assert_close(
        concrete.artifacts()["coefficients"], ada.artifacts()["coefficients"]
    )


def test_inner_step_resets_lambda_then_takes_one_adam_step():
    from lightning.fabric import Fabric

    from fusion_bench.method.test_time import infinite_batches

    pool = DataPool()
    method = ConcreteAdaMerging(inner_lr=0.1)
    module = method.build(pool)
    with torch.no_grad():
        module.coefficients.fill_(5.0)  # whatever lambda was, the inner step restarts from 0.3
    fabric = Fabric(accelerator="cpu", devices=1)
    opt = torch.optim.Adam([module.coefficients], lr=0.1)
    loaders = {t: infinite_batches(pool.task_dataset(t, "test"), 4, 0) for t in TASK_CLASSES}
    method._inner_step(fabric, module, pool, list(TASK_CLASSES), loaders, opt)
    # Adam's first step moves every coordinate by lr * sign(grad)
    step = (module.coefficients.detach() - 0.3).abs()
    torch.testing.assert_close(step, torch.full_like(step, 0.1), atol=1e-4, rtol=0)
    assert all(p.requires_grad for p in module.mask.parameters())
    assert not module.coefficients.requires_grad


@pytest.mark.parametrize("cls", [ConcreteTaskArithmetic, ConcreteAdaMerging])
def test_training_and_weights_path_round_trip(cls, tmp_path):
    from safetensors.torch import save_file

    pool = DataPool()
    kw = dict(lr=0.05, max_steps=4, batch_size=8)
    if cls is ConcreteAdaMerging:
        kw.update(adamerging_steps=3, adamerging_lr=0.05)
    method = cls(**kw)
    trained = method.run(pool)
    info, arts = method.extra_report(), method.artifacts()
    assert info["mask_training"]["steps"] == 4
    assert 0 < info["mask_mean_probability"] < 1
    logits = [v for k, v in arts.items() if k.startswith("mask_logits/")]
    assert len(logits) == 4 and any((v != 0).any() for v in logits)  # the mask was learned
    if cls is ConcreteAdaMerging:
        assert info["adamerging"]["steps"] == 3 and arts["coefficients"].shape == (2, 4)
    path = tmp_path / "method_artifacts.safetensors"
    save_file(arts, path)
    loaded = cls(weights_path=str(path))  # default steps: all skipped
    _assert_same_weights(loaded.run(pool), trained, rtol=0, atol=0)
    assert "mask_training" not in loaded.extra_report()
    arts["mask_logits/0.weight"] = torch.zeros(3, 3)
    save_file(arts, tmp_path / "bad.safetensors")
    with pytest.raises(FusionBenchError, match=r"mask_logits/0.weight' has shape \(3, 3\)"):
        cls(weights_path=str(tmp_path / "bad.safetensors")).run(pool)


def test_mask_learning_memory_is_flat():
    from lightning.fabric import Fabric

    from fusion_bench.method.test_time import minimise_entropy

    pool = DataPool()
    method = ConcreteTaskArithmetic()
    module = method.build(pool)
    method._train_only(module, "mask")
    optimizer = torch.optim.Adam(module.mask.parameters(), lr=1e-3)
    live = []

    def after(step):
        module.mask.resample()
        gc.collect()
        live.append(sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)))

    minimise_entropy(
        Fabric(accelerator="cpu", devices=1), module, optimizer, pool, list(TASK_CLASSES),
        max_steps=8, batch_size=4, after_step=after,
    )  # fmt: skip
    assert len(set(live[1:])) == 1, live


def test_bad_arguments():
    with pytest.raises(FusionBenchError, match="merge"):
        ConcreteMerging(merge="ties")
    with pytest.raises(FusionBenchError, match="eval_mask"):
        ConcreteTaskArithmetic(eval_mask="soft")
    with pytest.raises(FusionBenchError, match="temperature"):
        ConcreteTaskArithmetic(temperature=0)


@pytest.mark.parametrize("cls", [ConcreteTaskArithmetic, ConcreteAdaMerging])
def test_clip_pool_two_steps(clip_pool, cls):  # noqa: F811
    from transformers import CLIPVisionModel

    kw = {"adamerging_steps": 2} if cls is ConcreteAdaMerging else {}
    method = cls(max_steps=2, batch_size=4, **kw)
    model = method.run(clip_pool)
    assert isinstance(model, CLIPVisionModel)
    assert method.extra_report()["mask_training"]["steps"] == 2
    x = torch.stack([clip_pool.task_dataset("b", "test")[i][0] for i in range(2)])
    with torch.no_grad():
        assert torch.isfinite(clip_pool.task_logits(model, "b", x)).all()
