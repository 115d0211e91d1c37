"""Base task pool and the evaluation loop every task pool shares, data-parallel under Fabric DDP.

A subclass says what evaluating a task means (:meth:`BaseTaskPool.task_evaluation`: the data,
what each batch contributes, how the totals become metrics); the loop here runs it, the same way
for one process or ``world_size`` of them:

* the examples evaluated are the first ``limit_batches * batch_size`` of the task's split (all of
  them when ``limit_batches`` is null): the same examples whatever the number of processes;
* they are cut into ``world_size`` contiguous blocks whose sizes differ by at most one, and each
  rank evaluates its block. Unlike ``DistributedSampler`` nothing is padded or duplicated, so no
  example is counted twice;
* each rank sums its batches' statistics (numbers, tensors) and concatenates their lists
  (e.g. generated texts); the per-rank totals are gathered from every rank and merged in rank
  order, so every rank holds the totals one process would have (lists in example order, sums up
  to floating-point summation order) and computes the same metrics.

With one process the loop is the plain one: the whole split (or its first ``limit_batches``
batches) in order, no collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.utils.distributed import rank_and_world_size

if TYPE_CHECKING:
    import torch
    from lightning.fabric import Fabric
    from torch import nn


# -- sharding and reduction (pure) -------------------------------------------------------------
def examples_to_evaluate(num_examples: int, limit_batches: int | None, batch_size: int) -> int:
    """How many leading examples of a split are evaluated: ``limit_batches`` batches' worth.

    The limit counts batches of one process, so one process and ``world_size`` processes
    evaluate the same examples (a rank's share is then about ``1 / world_size`` of them).
    """
    if limit_batches is None:
        return num_examples
    return min(num_examples, limit_batches * batch_size)


def shard(num_examples: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(num_examples)``.

    The blocks of ranks ``0 .. world_size - 1`` partition the index set exactly (no padding, no
    duplicate); their sizes differ by at most one, the first ``num_examples % world_size`` ranks
    taking one more.

    Raises:
        ValueError: ``world_size < 1`` or ``rank`` outside ``[0, world_size)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    size, extra = divmod(num_examples, world_size)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def accumulate(totals: dict[str, Any], part: Mapping[str, Any]) -> None:
    """Add ``part`` into ``totals`` in place: lists are concatenated, anything else summed.

    A key seen for the first time starts from its value, so tensors keep their device and dtype
    (sums stay on the accelerator: the loop never waits for a host sync).
    """
    for key, value in part.items():
        if isinstance(value, list):
            totals.setdefault(key, []).extend(value)
        elif key in totals:
            totals[key] = totals[key] + value
        else:
            totals[key] = value


def to_host(totals: Mapping[str, Any]) -> dict[str, Any]:
    """``totals`` with scalar tensors as Python numbers and other tensors on the CPU (picklable,
    device-independent): what ranks exchange and what metric functions receive."""
    import torch

    out: dict[str, Any] = {}
    for key, value in totals.items():
        if isinstance(value, torch.Tensor):
            value = value.item() if value.dim() == 0 else value.detach().cpu()
        out[key] = value
    return out


def merge_totals(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The totals of all ranks from each rank's totals, given in rank order.

    Numbers are summed; lists are concatenated in rank order, which is example order because
    rank ``r`` holds the ``r``-th contiguous block. A rank that evaluated nothing contributes
    an empty mapping.
    """
    out: dict[str, Any] = {}
    for part in parts:
        accumulate(out, part)
    return out


def gather_totals(fabric: Fabric | None, totals: Mapping[str, Any]) -> dict[str, Any]:
    """Every rank's totals merged (see :func:`merge_totals`), on every rank.

    One ``all_gather_object`` per task: lists of predictions have a different length on each
    rank, which tensor collectives cannot carry without padding, and a task's totals are a few
    numbers and at most one list entry per example. With one process: ``totals`` unchanged.

    Args:
        fabric: the run's Fabric (``None``: one process).
        totals: this rank's totals, on the host (:func:`to_host`).
    """
    from fusion_bench.utils.distributed import all_gather_objects

    parts = all_gather_objects(fabric, dict(totals))
    return parts[0] if len(parts) == 1 else merge_totals(parts)


# -- statistics shared by the classification task pools ---------------------------------------
def classification_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """One batch's ``correct`` (top-1 hits), ``loss_sum`` (summed cross-entropy, float64) and
    ``count``; sums of these over every example give accuracy and mean cross-entropy."""
    import torch.nn.functional as F

    logits = logits.float()
    return {
        "correct": (logits.argmax(dim=-1) == labels).sum(),
        "loss_sum": F.cross_entropy(logits, labels, reduction="sum").double(),
        "count": labels.numel(),
    }


def classification_metrics(totals: Mapping[str, Any], empty: str) -> dict[str, float]:
    """``accuracy`` (in [0, 1]) and mean cross-entropy ``loss`` from summed
    :func:`classification_stats`.

    Raises:
        FusionBenchError: nothing was evaluated (message ``empty``).
    """
    count = totals.get("count", 0)
    if count == 0:
        raise FusionBenchError(empty)
    return {"accuracy": totals["correct"] / count, "loss": totals["loss_sum"] / count}


@dataclass
class TaskEvaluation:
    """What evaluating one task takes (built by :meth:`BaseTaskPool.task_evaluation`).

    Attributes:
        data: the task's evaluation split, a map-style dataset (the loop limits, shards and
            batches it; never shuffled).
        step: batch -> that batch's statistics ``{name: value}``. Numbers and tensors are summed
            over batches and ranks, lists concatenated in example order. Runs under
            ``torch.inference_mode`` and Fabric's autocast.
        metrics: totals -> ``{metric: value}``. Totals hold Python numbers (scalar tensors as
            ``.item()``) and lists over every evaluated example of every rank; a key no batch
            produced is absent (nothing evaluated).
        collate_fn: DataLoader ``collate_fn`` (``None``: PyTorch's default).
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader ``pin_memory`` (worth it for a CUDA device).
    """

    data: Any
    step: Callable[[Any], Mapping[str, Any]]
    metrics: Callable[[Mapping[str, Any]], dict[str, float]]
    collate_fn: Callable[[list], Any] | None = None
    num_workers: int = 0
    pin_memory: bool = False


class BaseTaskPool:
    """A set of evaluation tasks.

    ``evaluate`` receives a model — or a mapping ``task -> model`` when each task is to be
    evaluated with its own model — and returns ``{task: {metric: value}}``. Subclasses implement
    :meth:`prepare` (open everything a run needs, so bad locations fail before a long fusion)
    and :meth:`task_evaluation`; they set ``batch_size`` and ``limit_batches``.
    """

    batch_size: int = 1
    limit_batches: int | None = None

    @property
    def task_names(self) -> list[str]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Per-task metadata (at least ``version``) written into every report."""
        return {}

    def prepare(self) -> None:
        """Load what evaluation needs (tokenizers, heads, datasets). Default: nothing."""

    def bind_modelpool(self, modelpool: Any) -> None:
        """Adapt to the model pool whose models will be evaluated (called by the runner before
        fusion). Default: nothing; the CLIP task pool takes an open_clip pool's text tower."""

    def task_evaluation(self, name: str, model: nn.Module, device: torch.device) -> TaskEvaluation:
        """How to evaluate ``model`` on task ``name`` (move the model to ``device`` here)."""
        raise NotImplementedError

    def evaluate_shard(
        self,
        name: str,
        plan: TaskEvaluation,
        rank: int = 0,
        world_size: int = 1,
        fabric: Fabric | None = None,
    ) -> dict[str, Any]:
        """Totals of rank ``rank``'s shard of task ``name`` (Python numbers and lists).

        The examples are the first ``limit_batches * batch_size`` (see
        :func:`examples_to_evaluate`), cut into ``world_size`` contiguous blocks (:func:`shard`).
        """
        import torch
        from torch.utils.data import DataLoader, Subset
        from tqdm.auto import tqdm

        n = examples_to_evaluate(len(plan.data), self.limit_batches, self.batch_size)
        indices = shard(n, rank, world_size)
        data = plan.data if len(indices) == len(plan.data) else Subset(plan.data, indices)
        loader = DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=plan.collate_fn,
            num_workers=plan.num_workers,
            pin_memory=plan.pin_memory,
        )
        totals: dict[str, Any] = {}
        autocast = fabric.autocast() if fabric is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for batch in tqdm(
                loader, desc=f"eval {name}", unit="batch", leave=False, disable=rank != 0
            ):
                accumulate(totals, plan.step(batch))
        return to_host(totals)

    def evaluate_task(
        self, name: str, model: nn.Module, device: torch.device, fabric: Fabric | None
    ) -> dict[str, float]:
        """Metrics of ``model`` on task ``name``: this process evaluates its shard of the
        examples, the totals are merged across processes (see the module docstring)."""
        plan = self.task_evaluation(name, model, device)
        rank, world_size = rank_and_world_size(fabric)
        local = self.evaluate_shard(name, plan, rank, world_size, fabric)
        return plan.metrics(gather_totals(fabric, local))

    def evaluate(
        self, model: nn.Module | Mapping[str, nn.Module], *, fabric: Fabric | None = None
    ) -> dict[str, dict[str, float]]:
        """Evaluate ``model`` (or ``task -> model``) on every task.

        Args:
            model: the model, or a mapping ``task -> model`` evaluating each task with its own.
            fabric: when given, its device and autocast precision are used, and with several
                processes (DDP) each evaluates its shard of every task; otherwise CPU.

        Raises:
            FusionBenchError: a task missing from a model mapping, or a data/location problem.
        """
        import torch

        if isinstance(model, Mapping):
            missing = [n for n in self.task_names if n not in model]
            if missing:
                raise FusionBenchError(
                    f"no model for task(s) {', '.join(missing)} in the per-task model mapping "
                    f"(it has: {', '.join(map(str, model))})"
                )
        device = torch.device(fabric.device) if fabric is not None else torch.device("cpu")
        self.prepare()
        results = {}
        for name in self.task_names:
            if not isinstance(model, Mapping):
                results[name] = self.evaluate_task(name, model, device, fabric)
                continue
            # Per-task experts go back where they were, so that eight of them do not pile up on
            # the accelerator one task after another.
            task_model = model[name]
            home = next(iter(task_model.parameters()), torch.empty(0)).device
            results[name] = self.evaluate_task(name, task_model, device, fabric)
            task_model.to(home)
        return results
