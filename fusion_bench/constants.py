"""Package-wide constants (paths only; nothing here does work at import time)."""

from __future__ import annotations

import os
from pathlib import Path

PRETRAINED = "_pretrained_"
"""Name of the pretrained (base) model in every model pool."""


def config_dir() -> Path:
    """Directory holding the Hydra configs, for editable and non-editable installs alike.

    ``fusion_bench/config`` is a symlink to the repository's top-level ``config/`` in a source
    checkout, and a real directory inside a built wheel; either way it sits beside this file,
    so it is found from any working directory.
    """
    return Path(__file__).resolve().parent / "config"


def cache_dir() -> Path:
    """Root cache directory: ``$FUSION_BENCH_CACHE`` or ``$XDG_CACHE_HOME/fusion_bench``."""
    env = os.environ.get("FUSION_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fusion_bench"
