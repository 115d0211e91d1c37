"""RegMean++: RegMean layer by layer, on the activations of the already-merged layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.regmean import regmean_merge
from fusion_bench.merging.state_dict import check_compatible
from fusion_bench.merging.task_arithmetic import compute_dtype
from fusion_bench.method._activations import GramCollector, TaskLogits, param_key
from fusion_bench.method.regmean import RegMean

if TYPE_CHECKING:
    from fusion_bench.modelpool.base import BaseModelPool

GRANULARITIES = ("block", "linear")
_PREFIX = "model."  # TaskLogits' name for the backbone


class Unit(NamedTuple):
    """A group of parameters merged in one step: a Transformer block or one linear layer."""

    name: str
    linears: list[str]  # its linear layers (RegMean-merged)
    keys: list[str]  # all its state-dict keys (the other float ones are averaged)


def merge_units(model: nn.Module, linears: list[str], granularity: str) -> list[Unit]:
    """The merge steps of ``model``, in the registration order of ``linears``.

    ``block``: each child of an outermost ``nn.ModuleList`` holding linear layers is one unit
    (the Transformer layers: ``encoder.layers.3``, ``h.7``, ...); a linear layer outside every
    such list is a unit of its own. ``linear``: every linear layer is a unit. This is a
    structural rule (Transformers stack their layers in a ``ModuleList``), not per-architecture
    code; module-registration order stands in for the order of computation.
    """
    if granularity not in GRANULARITIES:
        raise FusionBenchError(
            f"regmean_plusplus: granularity must be one of {', '.join(GRANULARITIES)}, got "
            f"'{granularity}'"
        )
    keys = list(model.state_dict())
    blocks: list[str] = []
    if granularity == "block":
        lists = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
        outer = [n for n in lists if not any(n.startswith(f"{o}.") for o in lists if o != n)]
        blocks = [f"{n}.{c}" for n in outer for c, _ in model.get_submodule(n).named_children()]
    units: dict[str, Unit] = {}
    for linear in linears:
        name = next((b for b in blocks if linear.startswith(f"{b}.")), linear)
        if name not in units:
            prefix = f"{name}." if name else ""
            units[name] = Unit(name, [], [k for k in keys if k.startswith(prefix)])
        units[name].linears.append(linear)
    return list(units.values())


class RegMeanPlusPlus(RegMean):
    """RegMean++: the Gram matrices of layer ``l`` come from the merged layers ``< l``.

    Nguyen et al., "RegMean++: Enhancing Effectiveness and Generalization of Regression Mean
    for Model Merging", arXiv 2508.03121. Same closed form as RegMean
    (:func:`~fusion_bench.merging.regmean.regmean_merge`), but the inputs are different: RegMean
    takes ``X_i^(l)`` from expert ``i``'s own layers, ``X_i^(l) = f_i^(l-1)(X_i^(l-1))``;
    RegMean++ merges layer by layer and feeds task ``i``'s data through the *merged* layers,
    ``X_i^(l) = f_M^(l-1)(X_i^(l-1))``, so each layer is fitted to the activations the merged
    model will actually produce (cross-layer dependencies)::

        for each unit l (in order):
            for each expert i: run [merged units < l] -> [expert i's unit l] on task i's data,
                               G_i = alpha X_i^T X_i + (1 - alpha) diag(X_i^T X_i) per linear
            W_M = (sum_i G_i)^{-1} sum_i G_i W_i^T per linear; other unit params averaged

    Within a unit (``granularity: block``, a Transformer layer as in the paper and the
    reference implementation) the activations are expert ``i``'s own (intra-layer
    dependencies); parameters outside every unit (embeddings, final norms) are averaged up
    front, as the reference does for the embeddings. ``granularity: linear`` makes every
    linear layer a unit (all inputs from the merged model; an ablation). Units are found by
    :func:`merge_units` and processed in module-registration order.

    The hybrid model is a ``torch.func.functional_call`` of one frame model on a dict of
    merged / expert tensors (no model copies); each forward stops as soon as the unit's linear
    layers have seen their inputs. Cost: ``units x experts`` partial forward passes over the
    cached example inputs. Memory: every expert's not-yet-merged tensors (freed unit by unit).

    Args:
        num_regmean_examples: examples per task (a seeded random subset of its train split).
        reduce_non_diagonal_ratio: ``alpha`` in [0, 1].
        batch_size: examples per forward pass.
        seed: seed of the example subsets.
        granularity: ``"block"`` (paper) or ``"linear"``.
    """

    def __init__(
        self,
        num_regmean_examples: int = 256,
        reduce_non_diagonal_ratio: float = 0.95,
        batch_size: int = 32,
        seed: int = 0,
        granularity: str = "block",
    ) -> None:
        super().__init__(num_regmean_examples, reduce_non_diagonal_ratio, batch_size, seed)
        if granularity not in GRANULARITIES:
            raise FusionBenchError(
                f"regmean_plusplus: granularity must be one of {', '.join(GRANULARITIES)}, got "
                f"'{granularity}'"
            )
        self.granularity = str(granularity)

    @torch.no_grad()
    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return the first expert's architecture holding the RegMean++ merge."""
        from torch.func import functional_call
        from tqdm.auto import tqdm

        names = pool.names
        if not names:
            raise FusionBenchError("RegMeanPlusPlus needs at least one expert in the pool")
        fabric = self.get_fabric()
        self._report = {"granularity": self.granularity}
        frame = fabric.to_device(pool.load_model(names[0]))
        units = merge_units(frame, pool.linear_names(frame), self.granularity)
        # every expert's tensors (the hybrid needs expert i's unit l at step l) and its data
        pending: dict[str, dict[str, torch.Tensor]] = {}
        data: dict[str, list[torch.Tensor]] = {}
        for name in tqdm(names, desc="RegMean++: loading", unit="model", leave=False):
            sd = pool.load_state_dict(name)
            if pending:
                check_compatible(pending[names[0]], names[0], sd, name)
            pending[name] = {k: fabric.to_device(v) for k, v in sd.items()}
            data[name] = self.examples(pool, name)
        merged = self._average({k for u in units for k in u.keys}, pending)
        unused: list[str] = []
        for unit in tqdm(units, desc="RegMean++: merging", unit="unit", leave=False):
            grams: dict[str, list[torch.Tensor]] = {layer: [] for layer in unit.linears}
            for name in names:
                # merged units < l (and non-unit tensors) + expert i's unit l and later units
                params = {_PREFIX + k: v for k, v in {**pending[name], **merged}.items()}
                wrapper = TaskLogits(pool, frame, name, activations=True)

                def forward(x: torch.Tensor, wrapper=wrapper, params=params) -> None:
                    # params hold every name of tied tensors (T5's embeddings), each given
                    # its own (equal) value: tying them again would reject the duplicates
                    functional_call(wrapper, params, (x,), tie_weights=False)

                collected = self.collect_grams(
                    GramCollector(frame, unit.linears, stop_early=True), forward, data[name], fabric
                )
                for layer in unit.linears:
                    grams[layer].append(collected.get(layer))
            for layer in unit.linears:
                weights = [pending[n][param_key(layer, "weight")] for n in names]
                if any(g is None for g in grams[layer]):
                    unused.append(layer)
                    continue
                w = regmean_merge(weights, grams[layer], self.reduce_non_diagonal_ratio, layer)
                merged[param_key(layer, "weight")] = w
            regmean_keys = {
                param_key(layer, "weight") for layer in unit.linears if layer not in unused
            }
            merged.update(self._average(set(unit.keys) - regmean_keys, pending, only=True))
            for sd in pending.values():  # unit l is final: free the experts' copies
                for k in unit.keys:
                    sd.pop(k, None)
        self.warn_unused(unused)
        self._report["units"] = len(units)
        self._report["regmean_layers"] = sum(len(u.linears) for u in units) - len(unused)
        frame.load_state_dict(merged)
        return frame

    @staticmethod
    def _average(
        keys: set[str], pending: dict[str, dict[str, torch.Tensor]], only: bool = False
    ) -> dict[str, torch.Tensor]:
        """Plain average over experts of ``keys`` (``only``) or of every key but ``keys``.

        Integer tensors are taken from the first expert. The averaged keys are removed from
        ``pending`` when ``only`` is false (they are final from the start).
        """
        sds = list(pending.values())
        first = sds[0]
        chosen = [k for k in first if (k in keys) == only]
        out: dict[str, torch.Tensor] = {}
        for k in chosen:
            v = first[k]
            if v.is_floating_point():
                acc = sum(sd[k].to(compute_dtype(v.dtype)) for sd in sds) / len(sds)
                out[k] = acc.to(v.dtype)
            else:
                out[k] = v
        if not only:
            for sd in sds:
                for k in chosen:
                    del sd[k]
        return out
