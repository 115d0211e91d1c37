"""On-disk format of L-LoRA experts (linearised LoRA adapters) and of plain LoRA experts.

Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial Linearization",
arXiv 2310.04742. An L-LoRA expert is the linearised model
``f_lin(x; phi) = f(x; phi_0) + J_phi f(x; phi_0) (phi - phi_0)`` of a LoRA-adapted model
(:class:`fusion_bench.models.linearized.LinearizedModel` around a ``peft.PeftModel``). Its
directory is a normal PEFT adapter directory plus the linearisation point::

    adapter_config.json          PEFT LoRA config (rank, alpha, target modules, ...)
    adapter_model.safetensors    the fine-tuned adapter phi (PEFT's own keys)
    adapter_init.safetensors     phi_0, with exactly the keys of adapter_model.safetensors

Loaded by plain PEFT, the directory is the ordinary (non-linearised) LoRA model at ``phi``;
:func:`load_llora_expert` rebuilds the linearised one. Experts that are to be merged by task
arithmetic must share ``phi_0`` (fine-tuned from one adapter initialisation).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fusion_bench.errors import FusionBenchError
from fusion_bench.models.linearized import LinearizedModel

if TYPE_CHECKING:
    from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_INIT = "adapter_init.safetensors"
"""File of ``phi_0`` in an L-LoRA expert directory (same keys as :data:`ADAPTER_WEIGHTS`)."""

LORA_CONFIG_KEYS = (
    "peft_type",
    "r",
    "lora_alpha",
    "use_rslora",
    "use_dora",
    "target_modules",
    "fan_in_fan_out",
    "bias",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
)
"""Adapter config fields that change what the adapter parameters mean (shapes and scaling):
L-LoRA experts merged together must agree on them."""


@contextlib.contextmanager
def _atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` when the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _peft_model(model: nn.Module) -> Any:
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise FusionBenchError(
            f"expected a peft.PeftModel (a LoRA-adapted model), got {type(model).__name__}"
        )
    return model


def save_lora_expert(model: nn.Module, path: str | Path, tokenizer: Any | None = None) -> None:
    """Save a plain LoRA expert (a ``peft.PeftModel``) as a PEFT adapter directory, atomically.

    Args:
        model: the LoRA-adapted model.
        path: target directory (replaced if it exists).
        tokenizer: optionally saved alongside.

    Raises:
        FusionBenchError: ``model`` is not a ``PeftModel``.
    """
    peft_model = _peft_model(model)
    with _atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def save_llora_expert(
    model: LinearizedModel, path: str | Path, tokenizer: Any | None = None
) -> None:
    """Save a linearised LoRA model in the L-LoRA expert format (see the module docstring).

    Args:
        model: ``LinearizedModel`` around a ``peft.PeftModel``; its current ``phi`` goes to
            ``adapter_model.safetensors``, its ``phi_0`` to ``adapter_init.safetensors``.
        path: target directory (written to a temporary sibling and renamed into place).
        tokenizer: optionally saved alongside.

    Raises:
        FusionBenchError: ``model`` does not wrap a ``PeftModel``, or a linearised parameter is
            not part of the saved adapter.
    """
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import save_file

    if not isinstance(model, LinearizedModel):
        raise FusionBenchError(f"expected a LinearizedModel, got {type(model).__name__}")
    peft_model = _peft_model(model.model)
    phi0 = model.initial_parameters()
    with _atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        # PEFT's own key mapping (adapter name dropped) applied to a state dict holding phi_0.
        at_init = {**peft_model.state_dict(), **phi0}
        init = get_peft_model_state_dict(peft_model, state_dict=at_init)
        with safe_open(str(tmp / ADAPTER_WEIGHTS), framework="pt") as f:
            saved = set(f.keys())
        if set(init) != saved:
            raise FusionBenchError(
                "phi_0 does not map onto the saved adapter's keys "
                f"(e.g. {sorted(set(init) ^ saved)[:1]})"
            )
        # One adapter tensor per linearised parameter, else phi_0 of some parameter is lost.
        if len(init) != len(model.trainable_names):
            raise FusionBenchError(
                f"{len(model.trainable_names)} linearised parameters but {len(init)} adapter "
                "tensors: linearise exactly the PeftModel's trainable (LoRA) parameters"
            )
        save_file({k: v.detach().contiguous().cpu() for k, v in init.items()}, tmp / ADAPTER_INIT)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def is_llora_expert(path: str | Path) -> bool:
    """Whether ``path`` is an L-LoRA expert directory (adapter + ``adapter_init.safetensors``)."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).exists() and (p / ADAPTER_INIT).exists()


def _check_dir(path: Path) -> None:
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_INIT):
        if not (path / name).exists():
            raise FusionBenchError(
                f"'{path}' is not an L-LoRA expert: {name} is missing (an L-LoRA expert is a "
                f"PEFT adapter directory plus {ADAPTER_INIT} holding phi_0)"
            )


def read_adapter_init(path: str | Path) -> dict[str, torch.Tensor]:
    """``phi_0`` of the L-LoRA expert at ``path`` (PEFT's adapter keys -> tensors).

    Raises:
        FusionBenchError: the directory is not an L-LoRA expert or its two weight files do not
            have the same keys.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    _check_dir(path)
    init = load_file(str(path / ADAPTER_INIT))
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as f:
        keys = set(f.keys())
    if set(init) != keys:
        key = sorted(set(init) ^ keys)[0]
        raise FusionBenchError(
            f"L-LoRA expert '{path}': {ADAPTER_INIT} and {ADAPTER_WEIGHTS} differ in key '{key}'"
        )
    return init


def read_lora_config(path: str | Path) -> dict[str, Any]:
    """The fields of :data:`LORA_CONFIG_KEYS` of the adapter at ``path``."""
    cfg = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    out = {k: cfg.get(k) for k in LORA_CONFIG_KEYS}
    if isinstance(out["target_modules"], list):
        out["target_modules"] = sorted(out["target_modules"])
    return out


def load_llora_expert(
    base: nn.Module, path: str | Path, *, at_init: bool = False
) -> LinearizedModel:
    """Rebuild the linearised model of the L-LoRA expert at ``path`` on top of ``base``.

    Args:
        base: the pretrained (dense) model the adapter was trained on; it is wrapped and modified
            in place (LoRA layers injected), so pass a fresh copy.
        path: an L-LoRA expert directory (see the module docstring).
        at_init: set ``phi = phi_0`` (the pretrained model of an L-LoRA pool: its task vector is
            zero) instead of the fine-tuned ``phi``.

    Returns:
        ``LinearizedModel(PeftModel(base, adapter))`` with ``params0 = phi_0``, in eval mode.

    Raises:
        FusionBenchError: the directory is not an L-LoRA expert, or ``phi_0`` does not fit the
            adapter.
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    path = Path(path)
    init = read_adapter_init(path)
    peft_model = PeftModel.from_pretrained(base, str(path), is_trainable=True)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    if set(get_peft_model_state_dict(peft_model)) != set(init):
        raise FusionBenchError(f"L-LoRA expert '{path}': {ADAPTER_INIT} does not fit its adapter")
    phi = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    result = set_peft_model_state_dict(peft_model, init)
    if getattr(result, "unexpected_keys", None):
        raise FusionBenchError(
            f"L-LoRA expert '{path}': unexpected key '{result.unexpected_keys[0]}' in "
            f"{ADAPTER_INIT}"
        )
    model = LinearizedModel(peft_model, trainable_names=names)  # params0 = phi_0
    if not at_init:
        model.set_parameters(phi)
    return model.eval()
