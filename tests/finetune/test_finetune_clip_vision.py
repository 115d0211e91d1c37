"""Fine-tuning a CLIP vision tower against a frozen zero-shot head (the experts' recipe)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from clip_helpers import CLASSNAMES, IMAGE_SIZE, TEMPLATES
from clip_helpers import tokenizer as make_tokenizer

from fusion_bench.errors import FusionBenchError
from fusion_bench.finetune.clip_vision import (
    PUBLISHED_RECIPE,
    finetune_vision,
    layer_groups,
    lr_factor,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine they lose a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def clip(clip_dir):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(clip_dir).eval()


@pytest.fixture
def head(clip):
    from fusion_bench.models.clip_zero_shot import zero_shot_head

    return zero_shot_head(clip, make_tokenizer(), CLASSNAMES["a"], TEMPLATES)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(24, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.randint(len(CLASSNAMES["a"]), (24,), generator=g)
    return pixels, labels


def _batches(pixels, labels, batch, gen):
    while True:
        idx = torch.randint(len(pixels), (batch,), generator=gen)
        yield pixels[idx], labels[idx]


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_published_recipe_defaults():
    assert PUBLISHED_RECIPE == {
        "lr": 1e-5,
        "steps": 4000,
        "batch_size": 32,
        "layer_decay": 1.0,
        "warmup_steps": 0,
        "schedule": "cosine",
    }
    import inspect

    sig = inspect.signature(finetune_vision).parameters
    assert sig["lr"].default == 1e-5 and sig["steps"].default == 4000
    assert sig["layer_decay"].default == 1.0 and sig["schedule"].default == "cosine"


def test_only_the_vision_tower_changes(clip, head, data):
    before_clip = _state(clip)
    before_head = head.clone()
    grads_before = {n: p.requires_grad for n, p in clip.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    tuned = finetune_vision(clip, head, _batches(*data, 8, gen), steps=5, lr=1e-2)

    # the caller's CLIP (text tower, projections, logit scale and its own vision tower) and the
    # head are untouched, and so are their requires_grad flags
    after = clip.state_dict()
    assert all(torch.equal(before_clip[k], after[k]) for k in before_clip)
    assert torch.equal(head, before_head)
    assert {n: p.requires_grad for n, p in clip.named_parameters()} == grads_before
    # every tensor of the tuned tower moved, and it is a separate module in eval mode
    pre = clip.vision_model.state_dict()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, pre[k])]
    assert sorted(changed) == sorted(pre), set(pre) - set(changed)
    assert tuned is not clip.vision_model
    assert not tuned.training and not any(p.requires_grad for p in tuned.parameters())
    assert len(tuned.train_losses) == 5


def test_training_lowers_the_loss(clip, head, data):
    gen = torch.Generator().manual_seed(0)
    tuned = finetune_vision(clip, head, _batches(*data, 24, gen), steps=30, lr=3e-3)
    from fusion_bench.models.clip_zero_shot import zero_shot_logits

    pixels, labels = data
    with torch.no_grad():
        before = F.cross_entropy(zero_shot_logits(clip, clip.vision_model, pixels, head), labels)
        after = F.cross_entropy(zero_shot_logits(clip, tuned, pixels, head), labels)
    assert after < 0.5 * before


def test_layer_groups_give_lr_times_decay_to_the_depth(clip):
    vision = clip.vision_model  # 2 encoder layers
    groups = layer_groups(vision, lr=1.0, decay=0.5)
    assert [g["lr"] for g in groups] == [1.0, 0.5, 0.25, 0.125]
    name = {id(p): n for n, p in vision.named_parameters()}
    names = [sorted(name[id(p)] for p in g["params"]) for g in groups]
    assert all(n.startswith("post_layernorm") for n in names[0])
    assert all(n.startswith("encoder.layers.1.") for n in names[1])
    assert all(n.startswith("encoder.layers.0.") for n in names[2])
    assert all(n.startswith(("embeddings.", "pre_layrnorm.")) for n in names[3])
    assert sum(len(n) for n in names) == len(list(vision.parameters()))


def test_layer_groups_skip_frozen_parameters_and_accept_nested_names(clip):
    class Wrapped(torch.nn.Module):  # transformers 4 names: vision_model.encoder.layers.<i>.
        def __init__(self, inner):
            super().__init__()
            self.vision_model = inner
            self.config = inner.config

    vision = copy.deepcopy(clip.vision_model)
    vision.embeddings.requires_grad_(False)
    groups = layer_groups(Wrapped(vision), lr=2.0, decay=0.1)
    lrs = [g["lr"] for g in groups]
    assert lrs == pytest.approx([2.0, 0.2, 0.02, 0.002])  # depth 3 keeps the pre-layernorm
    assert len(groups[3]["params"]) == len(list(vision.pre_layrnorm.parameters()))


@pytest.mark.parametrize(
    ("step", "total", "warmup", "schedule", "expected"),
    [
        (0, 10, 0, "cosine", 1.0),
        (5, 10, 0, "cosine", 0.5),
        (10, 10, 0, "cosine", 0.0),
        (0, 10, 2, "cosine", 0.5),  # warmup: (step + 1) / warmup
        (1, 10, 2, "cosine", 1.0),
        (2, 10, 2, "cosine", 1.0),  # cosine starts after the warmup
        (6, 10, 2, "cosine", 0.5),  # half way through the remaining 8 steps
        (8, 10, 2, "cosine", 0.5 * (1 + math.cos(math.pi * 6 / 8))),
        (0, 10, 4, "constant", 0.25),
        (7, 10, 4, "constant", 1.0),
    ],
)
def test_lr_factor_at_hand_picked_steps(step, total, warmup, schedule, expected):
    assert lr_factor(step, total, warmup, schedule) == pytest.approx(expected, abs=1e-12)


def test_the_optimiser_follows_the_schedule(clip, head, data, monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def spy(self, *a, **kw):
        seen.append([g["lr"] for g in self.param_groups])
        return original(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    logged = []
    gen = torch.Generator().manual_seed(0)
    finetune_vision(
        clip,
        head,
        _batches(*data, 4, gen),
        steps=6,
        lr=0.1,
        layer_decay=0.5,
        warmup_steps=2,
        log_every=2,
        on_log=lambda s, loss, lr: logged.append((s, lr)),
    )
    for t, lrs in enumerate(seen):
        f = lr_factor(t, 6, 2, "cosine")
        assert lrs == pytest.approx([0.1 * f, 0.05 * f, 0.025 * f, 0.0125 * f])
    assert [s for s, _ in logged] == [2, 4, 6]
    assert [lr for _, lr in logged] == pytest.approx([0.1 * lr_factor(t, 6, 2) for t in (1, 3, 5)])


def test_draws_exactly_one_batch_per_step(clip, head, data):
    drawn = 0

    def counting():
        nonlocal drawn
        while True:
            drawn += 1
            yield data[0][:4], data[1][:4]

    finetune_vision(clip, head, counting(), steps=3, lr=1e-3)
    assert drawn == 3
    with pytest.raises(FusionBenchError, match="ran out after 2 of 3 steps"):
        finetune_vision(clip, head, [(data[0][:4], data[1][:4])] * 2, steps=3, lr=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps >= 1"),
        ({"lr": 0.0}, "lr > 0"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"schedule": "linear"}, "unknown schedule"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(clip, head, data, kwargs, match):
    with pytest.raises(FusionBenchError, match=match):
        finetune_vision(clip, head, [data], **{"steps": 1, "lr": 1e-3, **kwargs})


def test_head_of_the_wrong_width_is_refused(clip, data):
    with pytest.raises(FusionBenchError, match="zero-shot head has shape"):
        finetune_vision(clip, torch.zeros(3, 5), [data], steps=1, lr=1e-3)


def test_fabric_on_cpu_equals_plain_pytorch(clip, head, data):
    from lightning.fabric import Fabric

    plain = finetune_vision(
        clip, head, _batches(*data, 8, torch.Generator().manual_seed(1)), steps=4, lr=1e-2
    )
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    with_fabric = finetune_vision(
        clip,
        head,
        _batches(*data, 8, torch.Generator().manual_seed(1)),
        steps=4,
        lr=1e-2,
        fabric=fabric,
    )
    assert type(with_fabric) is type(plain)  # unwrapped from Fabric's module wrapper
    for (k, a), b in zip(
        plain.state_dict().items(), with_fabric.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), k
    assert with_fabric.train_losses == pytest.approx(plain.train_losses, abs=1e-6)


def _reference_finetune(model, head, pixels, labels, profile, gen):
    """The tiny builder's fine-tuning loop as it was written before finetune_vision existed
    (BUILD_VERSION 2), kept verbatim as the reference the wrapper must reproduce bit for bit."""
    from fusion_bench.models.clip_zero_shot import zero_shot_logits

    model.requires_grad_(False)
    vision = copy.deepcopy(model.vision_model).requires_grad_(True).train()
    head = head.detach().clone()

    def groups(vision, lr, decay):
        n = vision.config.num_hidden_layers
        groups = {}
        for name, p in vision.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("encoder.layers."):
                depth = n - int(name.split(".")[2])
            elif name.startswith("post_layernorm"):
                depth = 0
            else:
                depth = n + 1
            groups.setdefault(depth, []).append(p)
        return [{"params": ps, "lr": lr * decay**d} for d, ps in sorted(groups.items())]

    opt = torch.optim.Adam(groups(vision, profile.finetune_lr, profile.layer_decay))
    steps = profile.finetune_steps

    def cosine(step, total, warmup):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps, steps // 10))
    for _ in range(steps):
        idx = torch.randint(len(pixels), (profile.finetune_batch,), generator=gen)
        logits = zero_shot_logits(model, vision, pixels[idx], head)
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return vision.eval().requires_grad_(False)


def test_tiny_builder_wrapper_is_bit_identical_to_the_hand_written_loop(clip, head, data):
    from fusion_bench.tinybench.train import finetune

    profile = SimpleNamespace(
        finetune_steps=12, finetune_batch=8, finetune_lr=3e-3, layer_decay=0.5
    )
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    # two tasks in a row share one generator in the builder: the stream must line up after each
    got = [finetune(clip, head, *data, profile, gen_a) for _ in range(2)]
    ref_clip = copy.deepcopy(clip)
    want = [_reference_finetune(ref_clip, head, *data, profile, gen_b) for _ in range(2)]
    for g, w in zip(got, want, strict=True):
        for (k, a), b in zip(g.state_dict().items(), w.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    assert torch.equal(gen_a.get_state(), gen_b.get_state())
