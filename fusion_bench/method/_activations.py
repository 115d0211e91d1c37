"""Helpers of the data-dependent merging methods (Fisher merging, RegMean, RegMean++).

- :func:`task_examples`: a seeded random subset of a task's split, as input batches.
- :class:`TaskLogits`: ``pool.task_logits`` as an ``nn.Module`` over a backbone, so that
  ``torch.func.functional_call`` can run the task head on other parameters (no model copies).
- :class:`GramCollector`: forward hooks that accumulate ``X^T X`` of linear layers' inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    from fusion_bench.modelpool.base import BaseModelPool


def param_key(module: str, param: str) -> str:
    """State-dict key of ``param`` of submodule ``module`` (``""`` is the root module)."""
    return f"{module}.{param}" if module else param


def task_examples(
    pool: BaseModelPool,
    task: str,
    num_examples: int,
    batch_size: int,
    seed: int,
    split: str = "train",
) -> list[torch.Tensor]:
    """Inputs of ``num_examples`` examples of ``task``'s ``split``, in batches (CPU).

    The examples are the first ``num_examples`` of a permutation drawn with ``seed``, so every
    call (and every method) sees the same subset; all of them if the split is smaller. Labels
    are dropped: these methods use the inputs only (Fisher merging draws labels from the
    model's own predictions).

    Raises:
        FusionBenchError: if the pool has no data, the split is empty, or the sizes are not
            positive.
    """
    from torch.utils.data import DataLoader, Subset

    if num_examples < 1 or batch_size < 1:
        raise FusionBenchError(
            f"the number of examples ({num_examples}) and batch_size ({batch_size}) must be >= 1"
        )
    dataset = pool.task_dataset(task, split)
    n = len(dataset)
    if n == 0:
        raise FusionBenchError(f"task '{task}' has no {split} examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    subset = Subset(dataset, order[: min(num_examples, n)].tolist())
    return [inputs for inputs, _labels in DataLoader(subset, batch_size=batch_size)]


class TaskLogits(nn.Module):
    """``forward(x) = pool.task_logits(self.model, task, x)``: a backbone plus its task head
    (with ``activations=True``: ``pool.activation_forward``, the pass RegMean collects from).

    Its parameters are the backbone's, prefixed by ``model.``; the pool's head is not a
    submodule (it is fixed, never merged).
    """

    def __init__(
        self, pool: BaseModelPool, model: nn.Module, task: str, activations: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.activations = activations
        object.__setattr__(self, "_pool", pool)  # a plain attribute, not a submodule

    def forward(self, inputs: torch.Tensor) -> Any:
        if self.activations:
            return self._pool.activation_forward(self.model, self.task, inputs)
        return self._pool.task_logits(self.model, self.task, inputs)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once every watched layer has seen its input."""


class GramCollector:
    """Accumulate ``G = X^T X / rows`` of the inputs of named linear modules (a context manager).

    Inputs ``[..., features]`` (e.g. ``[batch, tokens, features]`` in Transformers) are
    flattened to rows ``[-1, features]``: every token is one regression example, as in RegMean.
    The Gram matrices are averaged over rows, as the RegMean authors' code does, so every task
    weighs the same however many tokens it had (a common factor cancels in the closed form).

    Args:
        model: the module whose submodules are watched (hooks are removed on exit).
        names: qualified names of the watched modules (inputs' last dim = features).
        stop_early: end each forward pass (see :meth:`forward`) as soon as every watched module
            has run once in it: the rest of the network cannot change those inputs.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], stop_early: bool = False) -> None:
        self.model = model
        self.names = list(names)
        self.stop_early = stop_early
        self._sums: dict[str, torch.Tensor] = {}
        self._rows: dict[str, int] = {}
        self._seen: set[str] = set()
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            x = x.detach().reshape(-1, x.shape[-1]).float()
            xtx = x.T @ x
            if name in self._sums:
                self._sums[name].add_(xtx)
                self._rows[name] += x.shape[0]
            else:
                self._sums[name], self._rows[name] = xtx, x.shape[0]
            self._seen.add(name)
            if self.stop_early and len(self._seen) == len(self.names):
                raise _StopForward

        return hook

    def __enter__(self) -> GramCollector:
        for name in self.names:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def forward(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` (a forward pass through :attr:`model`), collecting inputs."""
        self._seen = set()
        try:
            fn(*args)
        except _StopForward:
            pass

    def grams(self) -> dict[str, torch.Tensor]:
        """``name -> X^T X / rows`` for every watched module that received input."""
        return {n: self._sums[n] / self._rows[n] for n in self.names if n in self._sums}
