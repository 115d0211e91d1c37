"""Atomic file writes: a reader never sees a partial file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory + rename.

    The file gets the usual ``0o666 & ~umask`` mode (``mkstemp`` would leave it ``0o600``):
    reports, tables and plots are meant to be read by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_pretrained_atomic(
    model: Any, path: str | os.PathLike, tokenizer: Any | None = None
) -> Path:
    """``save_pretrained`` (safetensors) of ``model`` (and ``tokenizer``) into ``path``, written
    to a temporary sibling directory that replaces ``path`` only when complete.

    Raises:
        FusionBenchError: ``model`` has no ``save_pretrained`` (e.g. an ensemble).
    """
    import shutil

    from fusion_bench.errors import FusionBenchError

    if not hasattr(model, "save_pretrained"):
        raise FusionBenchError(
            f"cannot save a {type(model).__name__} with save_pretrained; this method's output "
            "is not a single Hugging Face model"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
