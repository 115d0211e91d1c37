"""TIES-Merging (and DARE-TIES): task arithmetic with trim / sign election / disjoint merge."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.ties import (
    MERGE_FUNCS,
    THRESHOLD_SCOPES,
    MergeFunc,
    ThresholdScope,
    ties_merge,
)
from fusion_bench.method.task_arithmetic import TaskArithmetic


class TiesMerging(TaskArithmetic):
    """TIES-Merging: ``theta = theta_0 + lambda * tau_m``, ``tau_m = TIES(tau_1..tau_N)``.

    Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", arXiv 2306.01708.
    ``TIES`` (see :mod:`fusion_bench.merging.ties`):

    1. trim: keep the top ``threshold`` % of each task vector's entries by magnitude;
    2. elect: ``gamma = sgn(sum_i tau_hat_i)`` per entry;
    3. disjoint merge: aggregate (``merge_func``) only the entries whose sign equals ``gamma``.

    The default ``merge_func: sum`` with ``lambda = 0.3`` is upstream FusionBench's setting, the
    one behind the published benchmark numbers; the paper's disjoint *mean* is
    ``merge_func: mean`` and is used with a larger lambda (about 1), as the mean does not grow
    with the number of agreeing experts.

    With ``drop_rate > 0`` the task vectors are DARE-sparsified before trimming (DARE-TIES, Yu
    et al., arXiv 2311.03099); ``dare_ties_merging`` is this class with ``drop_rate: 0.5``.
    TIES needs all trimmed task vectors at once (sign election is across experts); they are
    trimmed as they are loaded, so untrimmed copies never pile up.

    Args:
        scaling_factor: lambda (a float, or ``"1/N"``).
        threshold: percentage in (0, 100] of entries kept by the trim (20 keeps the top 20%).
        threshold_scope: ``"global"`` ranks all entries of a task vector together (the paper);
            ``"per_tensor"`` keeps the top ``threshold`` % of every tensor.
        merge_func: disjoint aggregation: ``"sum"``, ``"mean"`` or ``"max"``.
        drop_rate: DARE drop probability in [0, 1); 0 disables DARE.
        rescale: DARE rescaling by ``1 / (1 - drop_rate)``.
        seed: seed of the DARE generator.
    """

    def __init__(
        self,
        scaling_factor: float | str = 0.3,
        threshold: float = 20.0,
        threshold_scope: ThresholdScope = "global",
        merge_func: MergeFunc = "sum",
        drop_rate: float = 0.0,
        rescale: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(
            scaling_factor=scaling_factor, drop_rate=drop_rate, rescale=rescale, seed=seed
        )
        if not 0.0 < float(threshold) <= 100.0:
            raise FusionBenchError(
                f"TIES threshold is the percentage of entries kept, in (0, 100]; got {threshold}"
            )
        if threshold_scope not in THRESHOLD_SCOPES:
            raise FusionBenchError(
                f"threshold_scope must be one of {THRESHOLD_SCOPES}, got '{threshold_scope}'"
            )
        if merge_func not in MERGE_FUNCS:
            raise FusionBenchError(f"merge_func must be one of {MERGE_FUNCS}, got '{merge_func}'")
        self.threshold = float(threshold)
        self.threshold_scope = threshold_scope
        self.merge_func = merge_func

    def combine(self, task_vectors: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Reduce the task vectors with TIES (trim each as it arrives, elect, disjoint merge)."""
        return ties_merge(
            task_vectors,
            keep=self.threshold / 100.0,
            merge_func=self.merge_func,
            scope=self.threshold_scope,
        )
