"""Model pool of CLIP vision towers (``transformers.CLIPVisionModel``).

Each location is a hub id (``tanganke/clip-vit-base-patch32_eurosat``), a local
``save_pretrained`` directory, a ``tiny://`` location of the offline tiny benchmark, or a single
state-dict file (``.safetensors``; ``.bin``/``.pt`` only via ``torch.load(weights_only=True)``)
applied on top of the pretrained model's architecture. A full ``CLIPModel`` checkpoint (e.g.
``openai/clip-vit-base-patch32``) loads as its vision tower.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.base import BaseModelPool
from fusion_bench.utils.hub import load_with_fallback, resolve_location

if TYPE_CHECKING:
    from torch import nn

_STATE_DICT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def load_state_dict_file(path: str) -> dict:
    """Load a state-dict file safely: safetensors, or a pickle with ``weights_only=True``."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code objects
        raise FusionBenchError(
            f"cannot load '{path}' safely ({type(e).__name__}); only plain state dicts are "
            "accepted: convert the checkpoint to safetensors"
        ) from None
    if not isinstance(obj, dict):
        raise FusionBenchError(f"'{path}' holds a {type(obj).__name__}, not a state dict")
    return obj


class CLIPVisionModelPool(BaseModelPool):
    """CLIP vision towers: ``_pretrained_`` plus one fine-tuned expert per task.

    Args:
        models: ``name -> location``.
        validate: check keys / shapes / dtypes / finiteness of all models before any work.
    """

    def _load(self, name: str, location: str) -> nn.Module:
        from transformers import CLIPVisionModel
        from transformers.utils import logging as hf_logging

        hint = f"modelpool.models.{name}=/path/to/save_pretrained_dir"
        # Loading a vision tower out of a full CLIP checkpoint reports every text weight as
        # "unexpected"; that is the intended use, so keep the console quiet.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            if location.endswith(_STATE_DICT_SUFFIXES):
                path, _ = resolve_location(location)
                if not Path(path).is_file():
                    raise FusionBenchError(f"model '{name}': '{location}' is not a file")
                model = self.load_pretrained() if name != PRETRAINED else None
                if model is None:
                    raise FusionBenchError(
                        "_pretrained_ must be a model directory or hub id, not a state-dict file"
                    )
                missing, unexpected = model.load_state_dict(
                    load_state_dict_file(path), strict=False
                )
                if missing or unexpected:
                    key = (missing or unexpected)[0]
                    raise FusionBenchError(
                        f"model '{name}' ({location}): state dict does not fit the pretrained "
                        f"architecture (first {'missing' if missing else 'unexpected'} key '{key}')"
                    )
                return model
            return load_with_fallback(
                CLIPVisionModel.from_pretrained, location, what=f"model '{name}'", hint=hint
            )
        finally:
            hf_logging.set_verbosity(verbosity)

    def save_model(self, model: nn.Module, path: str) -> None:
        """``save_pretrained`` (safetensors) into ``path``, written to a temp dir then renamed."""
        import shutil
        import tempfile

        if not hasattr(model, "save_pretrained"):
            raise FusionBenchError(
                f"cannot save a {type(model).__name__} with save_pretrained; this method's output "
                "is not a single CLIP vision model"
            )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
