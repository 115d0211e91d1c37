"""Fisher merging: average the experts parameter by parameter, weighted by their Fisher."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.fisher import FISHER_LABELS, diagonal_fisher_sum, fisher_weighted_average
from fusion_bench.method._activations import TaskLogits, task_examples
from fusion_bench.method.base import BaseMethod

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from torch import nn

    from fusion_bench.modelpool.base import BaseModelPool

_PREFIX = "model."  # TaskLogits' name for the backbone


class FisherMerging(BaseMethod):
    """Fisher-weighted averaging of the experts.

    Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", arXiv 2111.09832::

        theta_j = sum_i lambda_i (F_i,j + eps) theta_i,j / sum_i lambda_i (F_i,j + eps)
        F_i     = 1/N sum_x E_{y ~ p_i(y|x)} (d log p_i(y|x) / d theta_i)^2

    ``F_i`` is the diagonal Fisher of expert ``i`` (``pool.task_logits(expert, task_i, .)``)
    on ``num_fisher_examples`` examples of its own task's train split; ``y`` is drawn from the
    expert's own predictive distribution (the true Fisher, not the empirical Fisher of the
    labels). With ``fisher_labels: expected`` (default) the expectation over ``y`` is exact:
    ``sum_y p_y g_y^2`` from one per-example gradient per class; ``sampled`` draws one ``y``
    per example instead (cheaper for many classes, an unbiased estimate). Per-example
    gradients: one forward pass per example (a ``functional_call`` of the expert) and one
    backward pass batched over its labels (see
    :func:`~fusion_bench.merging.fisher.diagonal_fisher_sum`). The reference implementation
    instead squares gradients summed over a batch, which is not the diagonal Fisher.

    Parameters the task log-likelihood does not depend on (and float buffers) get the plain
    average; integer buffers come from the first expert. Experts are streamed: the running
    numerator and denominator, one expert and its Fisher are in memory.

    Args:
        num_fisher_examples: examples per task (a seeded random subset of its train split).
        fisher_labels: ``"expected"`` (exact expectation) or ``"sampled"`` (one draw).
        minimal_fisher_weight: ``eps`` added to every Fisher entry.
        fisher_scaling_coefficients: ``lambda_i``, one per expert in pool order; ``None``:
            equal.
        normalize_fisher_weight: divide each expert's Fisher by its global L2 norm first (the
            upstream FusionBench option; not in the paper).
        batch_size: examples per data batch, and labels per batched backward pass
            (memory: ``batch_size`` gradient copies).
        seed: seed of the example subsets and of the sampled labels.
    """

    def __init__(
        self,
        num_fisher_examples: int = 256,
        fisher_labels: str = "expected",
        minimal_fisher_weight: float = 1e-6,
        fisher_scaling_coefficients: Sequence[float] | None = None,
        normalize_fisher_weight: bool = False,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        if fisher_labels not in FISHER_LABELS:
            raise FusionBenchError(
                f"fisher_merging: fisher_labels must be one of {', '.join(FISHER_LABELS)}, got "
                f"'{fisher_labels}'"
            )
        if int(num_fisher_examples) < 1 or int(batch_size) < 1:
            raise FusionBenchError(
                "fisher_merging: num_fisher_examples and batch_size must be >= 1, got "
                f"{num_fisher_examples} and {batch_size}"
            )
        if float(minimal_fisher_weight) < 0:
            raise FusionBenchError(
                f"fisher_merging: minimal_fisher_weight must be >= 0, got {minimal_fisher_weight}"
            )
        self.num_fisher_examples = int(num_fisher_examples)
        self.fisher_labels = str(fisher_labels)
        self.minimal_fisher_weight = float(minimal_fisher_weight)
        self.fisher_scaling_coefficients = (
            None
            if fisher_scaling_coefficients is None
            else [float(c) for c in fisher_scaling_coefficients]
        )
        self.normalize_fisher_weight = bool(normalize_fisher_weight)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._report: dict[str, Any] = {}

    def fisher(
        self,
        pool: BaseModelPool,
        task: str,
        model: nn.Module,
        keys: list[str],
        fabric: Fabric,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of ``model`` on ``task`` for the parameters ``keys`` (CPU)."""
        from torch.func import functional_call

        wrapper = TaskLogits(pool, model, task)
        params = {k: model.get_parameter(k) for k in keys}

        def logits_fn(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            with fabric.autocast():
                return functional_call(wrapper, {_PREFIX + k: v for k, v in p.items()}, (x,))

        batches = task_examples(pool, task, self.num_fisher_examples, self.batch_size, self.seed)
        total: dict[str, torch.Tensor] | None = None
        count = 0
        for x in batches:
            part = diagonal_fisher_sum(
                logits_fn,
                params,
                fabric.to_device(x),
                self.fisher_labels,
                generator,
                chunk_size=self.batch_size,
            )
            total = part if total is None else {k: total[k].add_(v) for k, v in part.items()}
            count += x.shape[0]
        self._report["fisher_examples"][task] = count
        return {k: (v / count).cpu() for k, v in total.items()}

    @staticmethod
    def fisher_keys(pool: BaseModelPool, task: str, model: nn.Module, x: torch.Tensor) -> list[str]:
        """Trainable parameters that the task log-likelihood depends on (one probing backward)."""
        params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise FusionBenchError(
                f"fisher_merging: model '{task}' has no parameter with requires_grad=True; the "
                "model pool must return trainable (unfrozen) models"
            )
        with torch.enable_grad():
            logits = pool.task_logits(model, task, x)
            grads = torch.autograd.grad(
                torch.log_softmax(logits.float(), -1).sum(),
                [p for _, p in params],
                allow_unused=True,
            )
        return [k for (k, _), g in zip(params, grads, strict=True) if g is not None]

    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the first expert's architecture holding the Fisher-weighted average."""
        from tqdm.auto import tqdm

        names = pool.names
        if not names:
            raise FusionBenchError("fisher_merging needs at least one expert in the pool")
        coefficients = self.fisher_scaling_coefficients
        if coefficients is not None and len(coefficients) != len(names):
            raise FusionBenchError(
                f"fisher_merging: {len(coefficients)} fisher_scaling_coefficients for "
                f"{len(names)} experts ({', '.join(names)}): give one per expert"
            )
        fabric = self.get_fabric()
        generator = torch.Generator().manual_seed(self.seed)
        self._report = {"fisher_labels": self.fisher_labels, "fisher_examples": {}}
        holder: dict[str, nn.Module] = {}

        def experts() -> Iterator[tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
            keys: list[str] | None = None
            for name in tqdm(names, desc="FisherMerging", unit="model", leave=False):
                holder.pop("model", None)  # free the previous expert before loading the next
                model = fabric.to_device(pool.load_model(name))
                if keys is None:
                    probe = task_examples(pool, name, 2, 2, self.seed)[0]
                    keys = self.fisher_keys(pool, name, model, fabric.to_device(probe))
                    self._report["fisher_parameters"] = len(keys)
                fisher = self.fisher(pool, name, model, keys, fabric, generator)
                holder["model"] = model
                yield name, {k: v.detach() for k, v in model.state_dict().items()}, fisher

        with torch.no_grad():
            merged = fisher_weighted_average(
                experts(),
                coefficients,
                self.minimal_fisher_weight,
                self.normalize_fisher_weight,
            )
            model = holder.pop("model")
            model.load_state_dict(merged)
        return model

    def extra_report(self) -> dict[str, Any]:
        """Label mode, examples used per task, number of Fisher-weighted parameters."""
        return dict(self._report)
