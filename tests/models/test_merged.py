"""The functional merged model: theta = theta_0 + m * sum_i lambda_i tau_i."""

import pytest
import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.task_arithmetic import apply_task_vector, sum_task_vectors, task_vector
from fusion_bench.models.merged import TaskVectorMergedModel


def _model(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        m[1].running_mean.normal_()  # a float buffer: merged like task arithmetic merges it
    return m.eval()


@pytest.fixture
def setup():
    base = _model(100)
    experts = [_model(i).state_dict() for i in range(3)]
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    tvs = [task_vector(sd, base_sd) for sd in experts]
    stacked = {k: torch.stack([tv[k] for tv in tvs]) for k in tvs[0]}
    return base, base_sd, tvs, stacked


def test_init_equals_task_arithmetic(setup):
    base, base_sd, tvs, stacked = setup
    ta = _model(100)
    ta.load_state_dict(apply_task_vector(base_sd, sum_task_vectors(tvs), 0.3))
    x = torch.randn(5, 4)
    for mode in ("task_wise", "layer_wise"):
        b = _model(100)
        merged = TaskVectorMergedModel(b, stacked, mode=mode, init_value=0.3, clamp_weights=True)
        torch.testing.assert_close(merged(x), ta(x))
        out = merged.merge()
        assert out is b
        for k, v in ta.state_dict().items():
            torch.testing.assert_close(out.state_dict()[k], v)


def test_layer_wise_with_equal_lambdas_is_task_wise(setup):
    _, _, _, stacked = setup
    lam = torch.tensor([0.1, 0.5, -0.2])
    k = len(stacked)
    tw = TaskVectorMergedModel(_model(100), stacked, mode="task_wise", coefficients=lam)
    lw = TaskVectorMergedModel(
        _model(100), stacked, mode="layer_wise", coefficients=lam[:, None].expand(3, k).clone()
    )
    x = torch.randn(5, 4)
    torch.testing.assert_close(tw(x), lw(x))
    # hand-computed: theta_k = theta_0 + sum_i lambda_i tau_i
    key = "0.weight"
    expected = _model(100).state_dict()[key] + sum(lam[i] * stacked[key][i] for i in range(3))
    torch.testing.assert_close(lw.merged_state_dict()[key], expected)


def test_layer_wise_uses_one_lambda_per_entry(setup):
    _, base_sd, _, stacked = setup
    k = len(stacked)
    lam = torch.zeros(3, k)
    lam[1, 2] = 2.0  # only expert 1, only the third state-dict entry
    merged = TaskVectorMergedModel(_model(100), stacked, coefficients=lam).merged_state_dict()
    for i, key in enumerate(stacked):
        want = base_sd[key] + (2.0 * stacked[key][1] if i == 2 else 0.0)
        torch.testing.assert_close(merged[key], want)


def test_gradients_reach_only_the_coefficients(setup):
    base, _, _, stacked = setup
    merged = TaskVectorMergedModel(base, stacked)
    merged(torch.randn(5, 4)).pow(2).sum().backward()
    assert merged.coefficients.grad is not None and merged.coefficients.grad.abs().sum() > 0
    assert [n for n, p in merged.named_parameters() if p.requires_grad] == ["coefficients"]
    assert all(p.grad is None for p in base.parameters())
    assert all(not b.requires_grad for b in merged.buffers())


def test_clamp_in_merge(setup):
    _, _, _, stacked = setup
    lam = torch.tensor([-1.0, 0.5, 3.0])
    m = TaskVectorMergedModel(
        _model(100), stacked, mode="task_wise", coefficients=lam, clamp_weights=True
    )
    assert m.lambdas()[:, 0].tolist() == [0.0, 0.5, 1.0]


class _ConstMask(nn.Module):
    def __init__(self, shapes, value):
        super().__init__()
        self.masks = [torch.full(tuple(s), value) for s in shapes]

    def forward(self):
        return self.masks


def test_mask_of_ones_is_unmasked_and_zeros_is_base(setup):
    _, base_sd, _, stacked = setup
    shapes = [t.shape[1:] for t in stacked.values()]
    plain = TaskVectorMergedModel(_model(100), stacked).merged_state_dict()
    ones = TaskVectorMergedModel(_model(100), stacked, mask=_ConstMask(shapes, 1.0))
    zeros = TaskVectorMergedModel(_model(100), stacked, mask=_ConstMask(shapes, 0.0))
    for k in stacked:
        torch.testing.assert_close(ones.merged_state_dict()[k], plain[k])
        torch.testing.assert_close(zeros.merged_state_dict()[k], base_sd[k])


def test_shape_errors_are_one_line(setup):
    base, _, _, stacked = setup
    with pytest.raises(FusionBenchError, match=r"coefficients have shape \(3,\)"):
        TaskVectorMergedModel(base, stacked, mode="layer_wise", coefficients=torch.zeros(3))
    with pytest.raises(FusionBenchError, match="mode"):
        TaskVectorMergedModel(base, stacked, mode="column_wise")
    bad = dict(stacked)
    bad.pop("0.bias")
    with pytest.raises(FusionBenchError, match="floating-point keys"):
        TaskVectorMergedModel(base, bad)


def test_unusable_after_merge(setup):
    base, _, _, stacked = setup
    merged = TaskVectorMergedModel(base, stacked)
    merged.merge()
    with pytest.raises(FusionBenchError, match="merge"):
        merged(torch.randn(2, 4))
