"""Task arithmetic, optionally on DARE-sparsified task vectors (the task-vector family's base)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.dare import check_drop_rate, dare_state_dict
from fusion_bench.merging.task_arithmetic import apply_task_vector, sum_task_vectors, task_vector
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool

MEAN_SCALING = "1/N"
"""``scaling_factor`` value meaning ``1/N`` for N experts: the mean of the (DARE'd) experts."""


class TaskArithmetic(BaseMethod):
    """Task arithmetic: ``theta = theta_0 + lambda * sum_i tau_i``, ``tau_i = theta_i - theta_0``.

    Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089.

    With ``drop_rate = p > 0`` every task vector is first sparsified with DARE (Yu et al.,
    "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
    Lunch", arXiv 2311.03099): ``tau_i' = m_i * tau_i / (1 - p)``, ``m_i ~ Bernoulli(1 - p)``
    drawn from a ``torch.Generator`` seeded with ``seed``. ``dare_task_arithmetic`` is this class
    with ``drop_rate: 0.5``; ``dare_simple_average`` additionally sets ``scaling_factor: 1/N``,
    since ``mean_i(theta_0 + tau_i') = theta_0 + (1/N) sum_i tau_i'``.

    Experts are streamed: the base, the running sum and the current expert are in memory.
    Subclasses (TIES) override only :meth:`combine`, the reduction of the task vectors.

    Args:
        scaling_factor: lambda, a float, or the string ``"1/N"`` for ``1 / number of experts``.
        drop_rate: DARE drop probability ``p`` in [0, 1); 0 disables DARE.
        rescale: DARE rescaling of the survivors by ``1 / (1 - p)``.
        seed: seed of the DARE generator (masks are drawn expert by expert, key by key).
    """

    def __init__(
        self,
        scaling_factor: float | str = 0.3,
        drop_rate: float = 0.0,
        rescale: bool = True,
        seed: int = 0,
    ) -> None:
        if (
            isinstance(scaling_factor, str)
            and scaling_factor.strip().replace(" ", "") != MEAN_SCALING
        ):
            raise FusionBenchError(
                f"scaling_factor must be a number or '{MEAN_SCALING}', got '{scaling_factor}'"
            )
        check_drop_rate(drop_rate)
        self.scaling_factor = (
            MEAN_SCALING if isinstance(scaling_factor, str) else float(scaling_factor)
        )
        self.drop_rate = float(drop_rate)
        self.rescale = bool(rescale)
        self.seed = int(seed)

    def lambda_for(self, n: int) -> float:
        """The scaling factor for ``n`` experts (resolves ``"1/N"``)."""
        return 1.0 / n if self.scaling_factor == MEAN_SCALING else float(self.scaling_factor)

    def task_vectors(
        self, pool: BaseModelPool, base: Mapping[str, torch.Tensor]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield each expert's task vector (DARE'd if ``drop_rate > 0``), one at a time."""
        generator = torch.Generator().manual_seed(self.seed) if self.drop_rate > 0 else None
        for name, sd in iter_state_dicts(pool, desc=type(self).__name__):
            tv = task_vector(sd, base, name)
            del sd  # free the expert before the next one is loaded
            if generator is not None:
                tv = dare_state_dict(tv, self.drop_rate, generator, self.rescale)
            yield tv

    def combine(self, task_vectors: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Reduce the task vectors to one: here ``sum_i tau_i`` (streaming)."""
        return sum_task_vectors(task_vectors)

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the pretrained model holding ``theta_0 + lambda * combine(tau_1..tau_N)``."""
        n = len(pool)
        if n == 0:
            raise FusionBenchError(f"{type(self).__name__} needs at least one expert in the pool")
        with torch.no_grad():
            model = pool.load_pretrained()
            base = model.state_dict()  # shares the model's storage: read-only until the end
            merged_tv = self.combine(self.task_vectors(pool, base))
            merged = apply_task_vector(base, merged_tv, self.lambda_for(n))
            del merged_tv
            model.load_state_dict(merged)
        return model
