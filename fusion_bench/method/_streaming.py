"""Helpers shared by the data-free methods: stream the pool's experts one state dict at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fusion_bench.modelpool.base import BaseModelPool


def iter_state_dicts(
    pool: BaseModelPool, names: list[str] | None = None, desc: str = "merging"
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield ``(name, state_dict)`` for the pool's experts, one at a time, with a progress bar.

    Goes through :meth:`BaseModelPool.load_state_dict`, so pools that can read tensors without
    building the model (e.g. from safetensors) stream them; the caller drops each state dict
    before the next is loaded.
    """
    from tqdm.auto import tqdm

    names = pool.names if names is None else names
    for name in tqdm(names, desc=desc, unit="model", leave=False):
        yield name, pool.load_state_dict(name)
