"""Concrete subspace learning: one implementation behind ``concrete_task_arithmetic`` and
``concrete_adamerging`` (thin subclasses in the modules of those names, one per config)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.concrete import (
    EVAL_MASKS,
    check_temperature,
    concrete_sample,
    eval_mask,
    logistic_noise,
    rescale_mask,
)
from fusion_bench.method.adamerging import (
    COEFFICIENTS,
    load_artifacts,
    loaded_tensor,
    loss_summary,
    stack_task_vectors,
)
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.merged import (
    MODES,
    TaskVectorMergedModel,
    coefficient_shape,
    tied_aliases,
    untied_state_dict,
)

if TYPE_CHECKING:
    from lightning.fabric import Fabric

    from fusion_bench.modelpool.base import BaseModelPool

MERGES = ("task_arithmetic", "adamerging")
MASK_PREFIX = "mask_logits/"
"""Artifact keys of the learned mask logits: ``mask_logits/<state-dict key>``."""


class ConcreteMask(nn.Module):
    """A Concrete mask with one logit per entry of every merged tensor, shared by all tasks.

    ``forward()`` returns, per tensor, ``sigmoid((logits + g) / T)`` with the logistic noise ``g``
    drawn by the last :meth:`resample` (so every task of a step sees the same sample, and the
    noise, not a graph, is what is kept between calls), rescaled to mean one if ``rescale``.
    After :meth:`fix` it returns fixed masks instead.
    """

    def __init__(
        self,
        shapes: Sequence[torch.Size],
        initial_logits: float = 0.0,
        temperature: float = 0.5,
        rescale: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.full(tuple(s), float(initial_logits))) for s in shapes]
        )
        self.temperature = float(temperature)
        self.rescale = bool(rescale)
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._noise: list[torch.Tensor] | None = None
        self._fixed: list[torch.Tensor] | None = None

    def _scale(self, m: torch.Tensor) -> torch.Tensor:
        return rescale_mask(m) if self.rescale else m

    def resample(self) -> None:
        """Draw the logistic noise of the next training step (seeded, on the logits' device)."""
        device = self.logits[0].device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self._noise = [logistic_noise(p.shape, self._generator) for p in self.logits]

    def fix(self, kind: str, generator: torch.Generator) -> None:
        """Freeze the mask to :func:`~fusion_bench.merging.concrete.eval_mask` of the logits."""
        self._fixed = [
            self._scale(eval_mask(p, kind, self.temperature, generator)) for p in self.logits
        ]
        self._noise = None

    def forward(self) -> list[torch.Tensor]:
        if self._fixed is not None:
            return self._fixed
        if self._noise is None:
            self.resample()
        return [
            self._scale(concrete_sample(p, n, self.temperature))
            for p, n in zip(self.logits, self._noise, strict=True)
        ]

    @torch.no_grad()
    def summary(self) -> dict[str, float]:
        """Mean keep probability ``sigmoid(logits)`` and the fraction of logits above 0."""
        numel = sum(p.numel() for p in self.logits)
        prob = sum(torch.sigmoid(p.float()).sum().item() for p in self.logits) / numel
        above = sum((p > 0).sum().item() for p in self.logits) / numel
        return {"mask_mean_probability": prob, "mask_density_logits_gt_0": above}


class ConcreteMerging(BaseMethod):
    """Concrete subspace learning, then task arithmetic or AdaMerging inside the subspace.

    Tang et al., "Concrete Subspace Learning based Interference Elimination for Multi-task Model
    Fusion", arXiv 2312.06173. A mask ``m`` over the entries of every merged tensor, shared by all
    task vectors, is learned through its Concrete relaxation (temperature ``T``)::

        m = sigmoid((l + g) / T) / mean(...),  g ~ Logistic(0, 1)      (per tensor, mean one)
        theta(m, lambda) = theta_0 + sum_i lambda_i (m * tau_i)
        upper level:  min_l  E_g  sum_t H(f_t(x; theta(m, lambda*(m))))  on unlabelled test batches
        lower level:  lambda*(m) = lambda (task arithmetic)  or  AdaMerging's argmin

    Procedure (the authors' reference implementation in FusionBench):

    - ``merge="task_arithmetic"``: lambda = ``scaling_factor`` is fixed; each step samples a mask
      and takes an Adam step on the logits ``l``.
    - ``merge="adamerging"``: each mask step resets lambda to ``scaling_factor``, takes one inner
      Adam step on lambda (``inner_lr``; the mask sample detached) on one batch per task, then the
      outer step on ``l`` through the masked merge with the updated lambda (first-order: no
      gradient through the inner update). Then the mask is fixed and AdaMerging runs from
      ``scaling_factor`` for ``adamerging_steps`` with ``adamerging_lr``.

    The final mask is ``eval_mask`` of the logits (default: one Concrete sample, as the reference's
    ``eval_mask_type: continuous``; ``hard`` = ``logits > 0``; ``expected`` = ``sigmoid(l)``;
    ``discrete`` = a Bernoulli sample), rescaled to mean one per tensor if ``rescale``. Logits
    start at ``initial_logits`` (0: keep probability 1/2). Randomness: noise from a generator
    seeded with ``seed``; the final mask from one seeded with ``seed + 1``.
    """

    def __init__(
        self,
        merge: str,
        scaling_factor: float = 0.3,
        temperature: float = 0.5,
        initial_logits: float = 0.0,
        lr: float = 1e-3,
        max_steps: int = 2000,
        batch_size: int = 16,
        rescale: bool = True,
        eval_mask: str = "sample",
        seed: int = 0,
        weights_path: str | None = None,
        mode: str = "layer_wise",
        inner_lr: float = 1.0,
        adamerging_lr: float = 1e-3,
        adamerging_steps: int = 1000,
        clamp_weights: bool = False,
    ) -> None:
        if merge not in MERGES:
            raise FusionBenchError(f"merge must be one of {', '.join(MERGES)}, got '{merge}'")
        if eval_mask not in EVAL_MASKS:
            raise FusionBenchError(
                f"eval_mask must be one of {', '.join(EVAL_MASKS)}, got '{eval_mask}'"
            )
        if mode not in MODES:
            raise FusionBenchError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
        if max_steps < 0 or adamerging_steps < 0 or batch_size < 1:
            raise FusionBenchError("steps must be >= 0 and batch_size >= 1")
        check_temperature(temperature)
        self.merge = merge
        self.scaling_factor = float(scaling_factor)
        self.temperature = float(temperature)
        self.initial_logits = float(initial_logits)
        self.lr = float(lr)
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.rescale = bool(rescale)
        self.eval_mask = eval_mask
        self.seed = int(seed)
        self.weights_path = None if weights_path is None else str(weights_path)
        # task arithmetic: one fixed lambda for every task (the mode is irrelevant)
        self.mode = mode if merge == "adamerging" else "task_wise"
        self.inner_lr = float(inner_lr)
        self.adamerging_lr = float(adamerging_lr)
        self.adamerging_steps = int(adamerging_steps) if merge == "adamerging" else 0
        self.clamp_weights = bool(clamp_weights)
        self._report: dict[str, Any] = {}
        self._artifacts: dict[str, torch.Tensor] = {}

    # -- setup -------------------------------------------------------------------------------
    def build(self, pool: BaseModelPool) -> TaskVectorMergedModel:
        """The masked functional merged model (logits / lambdas loaded from ``weights_path``)."""
        model = pool.load_pretrained()
        tvs = stack_task_vectors(pool, untied_state_dict(model), tied_aliases(model))
        shapes = [t.shape[1:] for t in tvs.values()]
        mask = ConcreteMask(shapes, self.initial_logits, self.temperature, self.rescale, self.seed)
        coefficients = None
        if self.weights_path is not None:
            tensors = load_artifacts(self.weights_path, "weights_path")
            with torch.no_grad():
                for p, (key, s) in zip(mask.logits, zip(tvs, shapes, strict=True), strict=True):
                    p.copy_(loaded_tensor(tensors, MASK_PREFIX + key, tuple(s), self.weights_path))
            if self.merge == "adamerging":
                shape = coefficient_shape(self.mode, len(pool), len(tvs))
                coefficients = loaded_tensor(tensors, COEFFICIENTS, shape, self.weights_path)
        module = TaskVectorMergedModel(
            model,
            tvs,
            mode=self.mode,
            init_value=self.scaling_factor,
            coefficients=coefficients,
            clamp_weights=self.clamp_weights,
            mask=mask,
        )
        return module

    @staticmethod
    def _train_only(module: TaskVectorMergedModel, what: str) -> None:
        """Make either the mask logits or the coefficients the only trainable tensors."""
        module.coefficients.requires_grad_(what == "coefficients")
        module.mask.requires_grad_(what == "mask")

    def _inner_step(self, fabric: Fabric, module, pool, tasks, loaders, optimizer) -> None:
        """Lower level of the mask step: lambda <- init, one Adam step with the mask detached
        (gradients averaged across the processes of a DDP run, as in the outer loop)."""
        from fusion_bench.method.test_time import entropy_step

        with torch.no_grad():
            module.coefficients.fill_(self.scaling_factor)
        self._train_only(module, "coefficients")
        entropy_step(fabric, module, optimizer, pool, tasks, loaders)
        self._train_only(module, "mask")

    # -- run ---------------------------------------------------------------------------------
    def run(self, pool: BaseModelPool) -> nn.Module:
        """Learn the mask (and lambdas), merge inside the masked subspace; return the model."""
        from fusion_bench.method.test_time import infinite_batches, minimise_entropy

        fabric = self.get_fabric()
        module = self.build(pool).to(fabric.device)
        mask: ConcreteMask = module.mask
        tasks = list(pool.names)
        train = self.weights_path is None
        report: dict[str, Any] = {"merge": self.merge, "eval_mask": self.eval_mask}

        if train and self.max_steps > 0:
            self._train_only(module, "mask")
            optimizer = torch.optim.Adam(mask.parameters(), lr=self.lr)
            mask.resample()
            inner = None
            if self.merge == "adamerging":
                inner_opt = fabric.setup_optimizers(
                    torch.optim.Adam([module.coefficients], lr=self.inner_lr)
                )
                loaders = {
                    t: infinite_batches(
                        pool.task_dataset(t, "test"), self.batch_size, self.seed + 7919 + i, fabric
                    )
                    for i, t in enumerate(tasks)
                }

                def inner() -> None:
                    self._inner_step(fabric, module, pool, tasks, loaders, inner_opt)

                inner()

            def after_step(step: int) -> None:
                if step < self.max_steps - 1:  # the last step needs no next sample
                    mask.resample()  # one shared mask sample per step, for every task
                    if inner is not None:
                        inner()

            history = minimise_entropy(
                fabric,
                module,
                optimizer,
                pool,
                tasks,
                max_steps=self.max_steps,
                batch_size=self.batch_size,
                seed=self.seed,
                desc=f"Concrete mask ({self.merge})",
                after_step=after_step,
            )
            report["mask_training"] = loss_summary(history)

        device = mask.logits[0].device
        mask.fix(self.eval_mask, torch.Generator(device=device).manual_seed(self.seed + 1))
        mask.requires_grad_(False)
        report.update(mask.summary())

        if self.merge == "adamerging":
            if train:
                with torch.no_grad():
                    module.coefficients.fill_(self.scaling_factor)
            if train and self.adamerging_steps > 0:
                self._train_only(module, "coefficients")
                optimizer = torch.optim.Adam([module.coefficients], lr=self.adamerging_lr)
                history = minimise_entropy(
                    fabric,
                    module,
                    optimizer,
                    pool,
                    tasks,
                    max_steps=self.adamerging_steps,
                    batch_size=self.batch_size,
                    seed=self.seed,
                    desc=f"Concrete AdaMerging ({self.mode})",
                )
                report["adamerging"] = loss_summary(history)
            lam = module.lambdas().detach().float().cpu()
            report["mean_lambda_per_task"] = dict(zip(tasks, lam.mean(dim=1).tolist(), strict=True))
            c = module.coefficients.detach()
            self._artifacts = {COEFFICIENTS: (c.clamp(0, 1) if self.clamp_weights else c).cpu()}
        else:
            self._artifacts = {}
        for key, p in zip(module.keys, mask.logits, strict=True):
            self._artifacts[MASK_PREFIX + key] = p.detach().cpu()
        self._report = report
        return module.merge()

    def artifacts(self) -> dict[str, torch.Tensor]:
        """``mask_logits/<key>`` per merged tensor, and ``coefficients`` (AdaMerging)."""
        return dict(self._artifacts)

    def extra_report(self) -> dict[str, Any]:
        """Mask statistics, losses first / last, per-task mean lambda (AdaMerging)."""
        return dict(self._report)
