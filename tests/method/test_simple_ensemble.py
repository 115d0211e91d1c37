"""SimpleEnsemble and EnsembleModel: output averaging."""

from collections import namedtuple

import pytest
import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.method.simple_ensemble import SimpleEnsemble
from fusion_bench.models.ensemble import EnsembleModel, average_outputs


def test_ensemble_averages_member_outputs(pool):
    model = SimpleEnsemble().run(pool)
    assert isinstance(model, EnsembleModel)
    assert isinstance(model.members, nn.ModuleList) and len(model.members) == 3
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in model.members]).mean(0)
        torch.testing.assert_close(model(x), expected)


class Const(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):
        return {"logits": x * self.value, "aux": (x + self.value, None)}


def test_structured_outputs():
    model = EnsembleModel([Const(1.0), Const(3.0)])
    out = model(torch.ones(2))
    torch.testing.assert_close(out["logits"], torch.full((2,), 2.0))
    torch.testing.assert_close(out["aux"][0], torch.full((2,), 3.0))
    assert out["aux"][1] is None
    Pair = namedtuple("Pair", "a b")
    avg = average_outputs([Pair(torch.zeros(1), torch.ones(1)), Pair(torch.ones(1), torch.ones(1))])
    assert isinstance(avg, Pair) and float(avg.a) == 0.5


def test_integer_outputs_and_empty_ensemble_rejected():
    with pytest.raises(FusionBenchError, match="floating"):
        average_outputs([torch.tensor([1]), torch.tensor([2])])
    with pytest.raises(FusionBenchError):
        EnsembleModel([])
