"""Twin-Merging: a shared merged model plus routed, SVD-compressed exclusive knowledge per task."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.state_dict import check_compatible
from fusion_bench.merging.svd import FULL_RANK
from fusion_bench.merging.twin import ExclusiveFactors, exclusive_factors
from fusion_bench.method._streaming import iter_state_dicts
from fusion_bench.method.base import BaseMethod
from fusion_bench.models.twin_moe import (
    FEATURES,
    TWIN_MODULES,
    TwinMergingModel,
    TwinRouter,
    routing,
)

if TYPE_CHECKING:
    from lightning.fabric import Fabric

    from fusion_bench.modelpool.base import BaseModelPool

BASE_METHODS: dict[str, str] = {
    "task_arithmetic": "fusion_bench.method.task_arithmetic.TaskArithmetic",
    "ties_merging": "fusion_bench.method.ties_merging.TiesMerging",
}
"""``base_method`` name -> the class that computes the shared model."""

ROUTER_SPLITS: tuple[str, ...] = ("validation", "train")


class TwinMerging(BaseMethod):
    """Twin-Merging: ``theta(x) = theta* + sum_t softmax(R(f*(x)))_t SVD_r(theta_t - theta*)``.

    Lu et al., "Twin-Merging: Dynamic Integration of Modular Expertise in Model Merging",
    arXiv 2406.15479.

    1. **Shared knowledge** ``theta*``: a merge of the experts by ``base_method`` (task
       arithmetic or TIES, with ``base_config`` as its hyperparameters).
    2. **Exclusive knowledge** ``v_t = theta_t - theta*`` of every routed layer: the linear
       layers given by ``pool.linear_names`` and, with ``route`` (default), every convolution
       (kernel flattened to ``[out, in * kernel]``) and embedding table. Each weight delta is
       compressed to rank ``rank`` by truncated SVD, each bias delta kept dense (the reference
       implementation SVD-compresses every >= 2-D tensor and leaves 1-D ones untouched).
    3. **Router** ``R``: an MLP (:class:`~fusion_bench.models.twin_moe.TwinRouter`) on the shared
       model's features ``f*(x)`` of the input, trained with cross-entropy to predict *which
       task* an input comes from on ``router_split`` of every task (the class labels are not
       used). Features are computed once (the shared model is frozen), so a training step costs
       only the MLP.
    4. **Dynamic merge** per input: every routed layer (e.g.
       :class:`~fusion_bench.models.twin_moe.TwinLinear`) computes
       ``W* x + b* + sum_t w_t(x) (U_t S_t V_t^T x + db_t)``, which equals running the
       per-sample merged weights and is batched (no per-sample loop).

    Deviations, each a documented choice:

    - Parameters outside the routed layers (layer norms, raw ``nn.Parameter`` s such as CLIP's
      class embedding, grouped convolutions) stay at their shared values; the paper merges
      ``v_t`` of every parameter per input. With a full rank and a one-hot routing the routed
      layers equal expert ``t``'s exactly; the forward then differs from expert ``t``'s only
      through those parameters. (On the tiny CLIP benchmark, routing linear layers only loses
      ~11 points of oracle-routed accuracy, almost all from the shared patch-embedding conv:
      hence convolutions and embeddings are routed by default.)
    - ``nn.MultiheadAttention.out_proj`` is left shared: that module reads its weight directly.
    - Router training: Adam at the reference's learning rate 5e-4, ``max_steps`` steps of
      ``batch_size`` features from *each* task (balanced); the reference trains 50 epochs with
      batch 1024 and keeps the best epoch on held-out data, which small validation sets do not
      allow.
    - Router features: ``router_feature="auto"`` uses the model's ``pooler_output`` when present
      (CLIP's normalised CLS token); ``"mean"`` is the reference's mean of the last hidden
      state.

    Args:
        base_method: ``"task_arithmetic"`` or ``"ties_merging"``: how ``theta*`` is computed.
        base_config: keyword arguments of that method (e.g. ``{"scaling_factor": 0.3}``);
            ``None``: its defaults.
        rank: rank ``r`` of each task's exclusive weight deltas (``-1``: full rank, exact).
        route: kinds of layers whose exclusive knowledge is routed: ``"linear"`` (the pool's
            ``linear_names``), ``"conv"`` (``nn.Conv1d/2d/3d`` with ``groups=1``),
            ``"embedding"`` (``nn.Embedding`` without ``max_norm``); ``["linear"]`` keeps
            everything else shared.
        router_split: split of every task the router is trained on: ``"validation"`` (the
            paper) or ``"train"`` (for pools without a validation split).
        router_samples: at most this many inputs per task (a seeded random subset); ``None``:
            the whole split.
        router_feature: ``"auto"``, ``"pooler"`` or ``"mean"`` (see above).
        router_hidden: router MLP width; ``None``: twice the feature dimension (the reference).
        router_dropout: router dropout probability (0.5 in the reference).
        lr: Adam learning rate of the router.
        max_steps: router optimisation steps.
        batch_size: features per task per step (also the feature-extraction batch size).
        seed: seed of the router's initialisation, the data order and ``router_samples``.
    """

    def __init__(
        self,
        base_method: str = "task_arithmetic",
        base_config: Mapping[str, Any] | None = None,
        rank: int = 32,
        route: Sequence[str] = ("linear", "conv", "embedding"),
        router_split: str = "validation",
        router_samples: int | None = None,
        router_feature: str = "auto",
        router_hidden: int | None = None,
        router_dropout: float = 0.5,
        lr: float = 5e-4,
        max_steps: int = 500,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        if base_method not in BASE_METHODS:
            raise FusionBenchError(
                f"twin_merging: base_method must be one of {tuple(BASE_METHODS)}, got "
                f"'{base_method}'"
            )
        if int(rank) != FULL_RANK and int(rank) < 1:
            raise FusionBenchError(
                f"twin_merging: rank must be a positive integer or {FULL_RANK} (full), got {rank}"
            )
        route = [route] if isinstance(route, str) else list(route)
        if not route or any(r not in TWIN_MODULES for r in route):
            raise FusionBenchError(
                f"twin_merging: route must be a non-empty subset of {tuple(TWIN_MODULES)}, got "
                f"{route}"
            )
        if router_split not in ROUTER_SPLITS:
            raise FusionBenchError(
                f"twin_merging: router_split must be one of {ROUTER_SPLITS}, got '{router_split}'"
            )
        if router_feature not in FEATURES:
            raise FusionBenchError(
                f"twin_merging: router_feature must be one of {FEATURES}, got '{router_feature}'"
            )
        if router_samples is not None and int(router_samples) < 1:
            raise FusionBenchError(
                f"twin_merging: router_samples must be >= 1, got {router_samples}"
            )
        if int(max_steps) < 0 or int(batch_size) < 1 or not 0.0 <= float(router_dropout) < 1.0:
            raise FusionBenchError(
                "twin_merging: need max_steps >= 0, batch_size >= 1 and 0 <= router_dropout < 1"
            )
        module, _, cls = BASE_METHODS[base_method].rpartition(".")
        # Built now so that a wrong base_config key fails before any model is loaded.
        try:
            self.base = getattr(importlib.import_module(module), cls)(**dict(base_config or {}))
        except TypeError as e:
            raise FusionBenchError(f"twin_merging: base_config does not fit {cls}: {e}") from None
        self.base_method = base_method
        self.base_config = dict(base_config or {})
        self.rank = int(rank)
        self.route = route
        self.router_split = router_split
        self.router_samples = None if router_samples is None else int(router_samples)
        self.router_feature = router_feature
        self.router_hidden = None if router_hidden is None else int(router_hidden)
        self.router_dropout = float(router_dropout)
        self.lr = float(lr)
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._router: nn.Module | None = None
        self._report: dict[str, Any] = {}

    # -- data ------------------------------------------------------------------------------
    def router_datasets(self, pool: BaseModelPool) -> list:
        """``router_split`` of every task (optionally subsampled), checked before any work."""
        from torch.utils.data import Subset

        out = []
        generator = torch.Generator().manual_seed(self.seed)
        for task in pool.names:
            try:
                ds = pool.task_dataset(task, self.router_split)
            except FusionBenchError as e:
                raise FusionBenchError(
                    f"twin_merging trains its router on the '{self.router_split}' split of every "
                    f"task: {e}. If the pool has no such split, set method.router_split=train"
                ) from None
            if self.router_samples is not None and len(ds) > self.router_samples:
                index = torch.randperm(len(ds), generator=generator)[: self.router_samples]
                ds = Subset(ds, index.tolist())
            out.append(ds)
        return out

    @torch.no_grad()
    def features(
        self, fabric: Fabric, model: TwinMergingModel, dataset, pool: BaseModelPool
    ) -> torch.Tensor:
        """The shared model's features ``[N, d]`` (float32, CPU) of a dataset's inputs, computed
        by ``model.features`` (the router's inputs at evaluation too) called the pool's way."""
        from torch.utils.data import DataLoader

        loader = fabric.setup_dataloaders(
            DataLoader(dataset, batch_size=self.batch_size), use_distributed_sampler=False
        )
        chunks = []
        with routing(None), fabric.autocast():  # no routing: the shared model
            for inputs, _labels in loader:
                f = pool.backbone_call(model.features, inputs)
                chunks.append(f.float().cpu())
        return torch.cat(chunks)

    # -- exclusive knowledge -----------------------------------------------------------------
    def targets(self, pool: BaseModelPool, model: nn.Module) -> dict[str, str]:
        """Routed layers of ``model``: ``name -> kind`` (see ``route``), in module order."""
        kinds: dict[str, str] = {}
        if "linear" in self.route:
            excluded = {
                f"{p}.out_proj" if p else "out_proj"
                for p, m in model.named_modules()
                if isinstance(m, nn.MultiheadAttention)
            }
            kinds.update({n: "linear" for n in pool.linear_names(model) if n not in excluded})
        embeddings = set(pool.embedding_names(model)) if "embedding" in self.route else set()
        for n, m in model.named_modules():
            if "conv" in self.route and isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                if m.groups == 1:
                    kinds[n] = "conv"
            elif n in embeddings and isinstance(m, nn.Embedding) and m.max_norm is None:
                kinds[n] = "embedding"
        order = [n for n, _ in model.named_modules()]
        return {n: kinds[n] for n in order if n in kinds and n}

    def twin_layers(self, pool: BaseModelPool, shared: nn.Module, device) -> dict[str, Any]:
        """Replace the routed layers of ``shared`` by their Twin wrappers (in place).

        Returns:
            Facts for the report (layers per kind, retained energy of the truncation).
        """
        from tqdm.auto import tqdm

        targets = self.targets(pool, shared)
        if not targets:
            raise FusionBenchError(f"twin_merging: the model has no layer of kinds {self.route}")
        base = shared.state_dict()
        factors: dict[str, list[ExclusiveFactors]] = {n: [] for n in targets}
        changed = dict.fromkeys(targets, False)
        for expert, sd in iter_state_dicts(pool, desc="TwinMerging: exclusive knowledge"):
            check_compatible(base, "shared model", sd, expert)
            for n in tqdm(targets, desc=f"SVD {expert}", unit="layer", leave=False):
                w, b = f"{n}.weight", f"{n}.bias"
                changed[n] |= not torch.equal(sd[w], base[w]) or (
                    b in base and not torch.equal(sd[b], base[b])
                )
                factors[n].append(
                    exclusive_factors(sd[w], base[w], self.rank, sd.get(b), base.get(b), device)
                )
            del sd  # free the expert before the next one is loaded
        energies = []
        routed = {kind: 0 for kind in self.route}
        for n, kind in targets.items():
            if not changed[n]:
                continue  # every expert equals the shared layer here: nothing to route
            parent, _, child = n.rpartition(".")
            fs = factors.pop(n)
            layer = TWIN_MODULES[kind].from_factors(shared.get_submodule(n), fs)
            setattr(shared.get_submodule(parent) if parent else shared, child, layer)
            energies += [f.energy for f in fs]
            routed[kind] += 1
        return {
            "layers_routed": routed,
            "layers_kept_shared": len(targets) - sum(routed.values()),
            "retained_energy_mean": sum(energies) / len(energies) if energies else 1.0,
            "retained_energy_min": min(energies) if energies else 1.0,
        }

    # -- router ------------------------------------------------------------------------------
    def _evaluate(self, router: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        was_training = router.training
        router.eval()
        with torch.no_grad():
            logits = router(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y).item()
            acc = (logits.argmax(-1) == y).float().mean().item()
        router.train(was_training)
        return loss, acc

    def train_router(self, fabric: Fabric, feats: list[torch.Tensor]) -> tuple[nn.Module, dict]:
        """Train the router on per-task features (label = task index) with cross-entropy."""
        from torch.utils.data import TensorDataset
        from tqdm.auto import tqdm

        from fusion_bench.method.test_time import infinite_batches

        num_tasks = len(feats)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the initialisation, without touching global RNG state
            router = TwinRouter(
                feats[0].shape[1], num_tasks, self.router_hidden, self.router_dropout
            )
        labels = [torch.full((len(f),), t, dtype=torch.long) for t, f in enumerate(feats)]
        optimizer = torch.optim.Adam(router.parameters(), lr=self.lr)
        module, optimizer = fabric.setup(router, optimizer)
        x_all = fabric.to_device(torch.cat(feats))
        y_all = fabric.to_device(torch.cat(labels))
        loss0, acc0 = self._evaluate(router, x_all, y_all)
        # With one task the softmax is always 1: nothing to learn (and BatchNorm needs 2 rows).
        steps = self.max_steps if num_tasks > 1 else 0
        loaders = [
            infinite_batches(TensorDataset(f, y), self.batch_size, self.seed + t, fabric)
            for t, (f, y) in enumerate(zip(feats, labels, strict=True))
        ]
        module.train()
        bar = tqdm(range(steps), desc="TwinMerging: router", disable=not fabric.is_global_zero)
        for _ in bar:
            batches = [next(loader) for loader in loaders]
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            with fabric.autocast():
                loss = torch.nn.functional.cross_entropy(module(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        router.eval()
        loss1, acc1 = self._evaluate(router, x_all, y_all)
        return router, {
            "router_steps": steps,
            "router_samples_per_task": [len(f) for f in feats],
            "router_loss_initial": loss0,
            "router_loss_final": loss1,
            "router_accuracy_initial": acc0,
            "router_accuracy_final": acc1,
        }

    # -- the method ------------------------------------------------------------------------
    def run(self, pool: BaseModelPool) -> nn.Module:
        """Return a :class:`~fusion_bench.models.twin_moe.TwinMergingModel` (a drop-in for the
        pretrained model's forward)."""
        if len(pool) == 0:
            raise FusionBenchError("twin_merging needs at least one expert in the pool")
        fabric = self.get_fabric()
        datasets = self.router_datasets(pool)  # fail on missing data before merging anything
        self.base.fabric = fabric
        shared = self.base.run(pool)
        params_shared = sum(p.numel() for p in shared.parameters())
        layer_info = self.twin_layers(pool, shared, fabric.device)
        shared = shared.to(fabric.device).eval().requires_grad_(False)
        probe = TwinMergingModel(shared, nn.Identity(), self.router_feature, pool.names)
        feats = [self.features(fabric, probe, ds, pool) for ds in datasets]
        router, router_info = self.train_router(fabric, feats)
        model = TwinMergingModel(shared, router, self.router_feature, pool.names).eval()
        self._router = router
        exclusive = sum(
            m.num_exclusive()
            for m in shared.modules()
            if isinstance(m, tuple(TWIN_MODULES.values()))
        )
        self._report = {
            "base_method": self.base_method,
            "rank": self.rank,
            **layer_info,
            "params_shared": params_shared,
            "params_exclusive": exclusive,
            "params_router": sum(p.numel() for p in router.parameters()),
            **router_info,
        }
        return model

    def extra_report(self) -> dict[str, Any]:
        """Layers routed, retained SVD energy, parameter counts and the router's loss/accuracy
        (on its training features, before and after training) of the last run."""
        return dict(self._report)

    def artifacts(self) -> dict[str, torch.Tensor]:
        """The trained router's state (``router.<name>``)."""
        if self._router is None:
            return {}
        return {f"router.{k}": v for k, v in self._router.state_dict().items()}
