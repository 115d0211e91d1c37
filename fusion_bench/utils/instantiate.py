"""The one way configs become objects: allow-listed ``_target_`` + signature check.

Configs travel with checkpoints and reports, so a config must not be able to construct an
arbitrary object: every ``_target_`` (at any depth) must start with an allowed prefix.
Hyperparameter names are checked against the target's constructor before anything is built, so a
typo is a one-line error naming the valid parameters instead of a deep TypeError.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from fusion_bench.errors import FusionBenchError

ALLOWED_PREFIXES: tuple[str, ...] = ("fusion_bench.", "torch.optim.")
_HYDRA_KEYS = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}


def _walk_targets(node: Any, path: str):
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield path, str(node["_target_"])
        for k, v in node.items():
            yield from _walk_targets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _walk_targets(v, f"{path}[{i}]")


def import_target(target: str, where: str) -> Any:
    """Import the object named by a dotted ``target`` path."""
    if not target.startswith(ALLOWED_PREFIXES):
        raise FusionBenchError(
            f"{where}: _target_ '{target}' is not allowed; targets must start with one of "
            f"{', '.join(ALLOWED_PREFIXES)}"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise FusionBenchError(f"{where}: cannot import _target_ '{target}' ({e})") from None


def check_config(cfg: Mapping[str, Any], where: str) -> type:
    """Check every ``_target_`` of ``cfg`` and bind its top-level keys to the target's signature.

    Args:
        cfg: a plain mapping (resolve OmegaConf configs with ``OmegaConf.to_container`` first).
        where: how to name this config in errors, e.g. ``"method 'ties_merging'"``.

    Returns:
        The top-level target class.

    Raises:
        FusionBenchError: a disallowed / unimportable target, an unknown parameter or a
            missing required parameter.
    """
    if "_target_" not in cfg:
        raise FusionBenchError(
            f"{where}: the config has no _target_; pick one from its config group"
        )
    for path, target in _walk_targets(cfg, ""):
        import_target(target, f"{where}{' at ' + path if path else ''}")
    cls = import_target(str(cfg["_target_"]), where)
    kwargs = {k: v for k, v in cfg.items() if k not in _HYDRA_KEYS}
    sig = inspect.signature(cls)
    params = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not takes_var_kw:
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise FusionBenchError(
                f"{where} ({cls.__module__}.{cls.__qualname__}) has no parameter "
                f"'{unknown[0]}'; valid parameters: {', '.join(params) or '(none)'}"
            )
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        raise FusionBenchError(
            f"{where} ({cls.__module__}.{cls.__qualname__}) needs parameter '{missing[0]}'; "
            f"set it in the config or on the command line"
        )
    return cls


def instantiate(cfg: Any, where: str) -> Any:
    """Check ``cfg`` (see :func:`check_config`) and build it with ``hydra.utils.instantiate``."""
    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import DictConfig, OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(container, Mapping):
        raise FusionBenchError(
            f"{where}: expected a mapping with a _target_, got {type(container).__name__}"
        )
    check_config(container, where)
    from hydra.errors import InstantiationException

    try:
        return hydra_instantiate(container, _convert_="all")
    except InstantiationException as e:
        # Hydra wraps what the constructor raised in a multi-line message; report the cause.
        cause = e.__cause__ or e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, FusionBenchError):
            raise FusionBenchError(f"{where}: {cause}") from None
        raise FusionBenchError(
            f"{where}: building '{container.get('_target_')}' failed: "
            f"{type(cause).__name__}: {cause}"
        ) from cause
