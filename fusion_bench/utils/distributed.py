"""The few collectives fusion_bench needs across the processes of a Lightning Fabric DDP run.

Each is a no-op with one process (or without Fabric), so single-process runs do exactly what
they did before DDP existed. Fabric launches the processes and creates the process group
(``fabric.launch()``); these helpers only use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    import torch
    from lightning.fabric import Fabric


def rank_and_world_size(fabric: Fabric | None) -> tuple[int, int]:
    """``(global rank, world size)`` of this process; ``(0, 1)`` without Fabric."""
    if fabric is None:
        return 0, 1
    return fabric.global_rank, fabric.world_size


def _require_process_group(world_size: int) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise FusionBenchError(
            f"fabric has {world_size} processes but no process group: call fabric.launch() first"
        )


def all_gather_objects(fabric: Fabric | None, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` with one process).

    For picklable values whose size differs between ranks (e.g. lists of predictions), which
    tensor collectives cannot carry without padding.

    Raises:
        FusionBenchError: Fabric has several processes but no process group (not launched).
    """
    _, world_size = rank_and_world_size(fabric)
    if world_size == 1:
        return [obj]
    _require_process_group(world_size)
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_tensors(fabric: Fabric | None, tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (as DDP does with the parameters of
    a model it wraps), so that every rank starts from the same state."""
    _, world_size = rank_and_world_size(fabric)
    if world_size == 1 or not tensors:
        return
    _require_process_group(world_size)
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in tensors:
            # broadcast works in place on a contiguous tensor on the process group's device
            buf = t.detach().contiguous()
            dist.broadcast(buf, src=0)
            if buf.data_ptr() != t.data_ptr():
                t.copy_(buf)


def average_gradients(fabric: Fabric | None, params: Sequence[torch.Tensor], loss: float) -> float:
    """Average the gradients of ``params`` over the ranks, in place; return the mean ``loss``.

    Called between backward and the optimiser step, it makes every rank take the step of the
    loss summed over all ranks' batches (divided by the world size), as DDP would: with
    identical starting values every rank then keeps identical parameters. One all-reduce
    carries every gradient, one has-gradient flag per tensor (a tensor for which no rank has a
    gradient keeps ``grad is None``, so the optimiser skips it as with one process) and the loss
    (so that the logged loss is the mean over ranks).

    Args:
        fabric: the run's Fabric; with one process nothing is touched.
        params: the tensors the optimiser updates (in the same order on every rank).
        loss: this rank's loss of the step.

    Returns:
        ``loss`` averaged over the ranks (``loss`` itself with one process).
    """
    _, world_size = rank_and_world_size(fabric)
    if world_size == 1:
        return loss
    import torch

    device = fabric.device
    pieces = [
        torch.zeros(p.numel(), device=device)
        if p.grad is None
        else p.grad.detach().reshape(-1).to(device, torch.float32)
        for p in params
    ]
    flags = [0.0 if p.grad is None else 1.0 for p in params]
    pieces.append(torch.tensor([*flags, float(loss)], device=device))
    flat = fabric.all_reduce(torch.cat(pieces), reduce_op="mean")
    offset = 0
    for p, has_grad in zip(params, flat[-len(params) - 1 : -1].tolist(), strict=True):
        n = p.numel()
        if has_grad > 0:
            grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        offset += n
    return float(flat[-1])


def check_same_across_ranks(
    fabric: Fabric | None, tensors: Sequence[torch.Tensor], what: str
) -> None:
    """Raise on every rank unless ``tensors`` are bitwise identical on all ranks.

    A cheap guard (one digest per rank) that trained merging parameters did not diverge
    between processes, which would make each rank evaluate a different merged model.

    Raises:
        FusionBenchError: the ranks hold different values.
    """
    _, world_size = rank_and_world_size(fabric)
    if world_size == 1:
        return
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    digests = all_gather_objects(fabric, digest.hexdigest())
    if len(set(digests)) != 1:
        raise FusionBenchError(
            f"{what} differ between the {world_size} processes after training (a gradient "
            "or data-order synchronisation bug); the merged models would not agree"
        )
