"""Model pool of CLIP vision towers (``transformers.CLIPVisionModel``).

Each location is a hub id (``tanganke/clip-vit-base-patch32_eurosat``), a local
``save_pretrained`` directory, a ``tiny://`` location of the offline tiny benchmark, or a single
state-dict file (``.safetensors``; ``.bin``/``.pt`` only via ``torch.load(weights_only=True)``)
applied on top of the pretrained model's architecture. A full ``CLIPModel`` checkpoint (e.g.
``openai/clip-vit-base-patch32``) loads as its vision tower.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.base import BaseModelPool
from fusion_bench.utils.hub import load_with_fallback, resolve_location

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fusion_bench.zero_shot.classifier import CLIPZeroShotClassifier

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

    Data-dependent methods get each task's data and logits through this pool: the zero-shot
    head of the task (from ``clip_model``'s text tower, the heads the experts were fine-tuned
    against) on top of whatever vision tower the method is training or probing.

    Args:
        models: ``name -> location``.
        validate: check keys / shapes / dtypes / finiteness of all models before any work.
        clip_model: location of the full CLIP whose text tower gives the task heads; ``None``:
            the ``_pretrained_`` location (a full CLIP checkpoint in every shipped pool).
        tasks: ``task -> task config`` (same keys as the task pools' task entries, plus
            ``train_split`` / ``validation_split``): the data of data-dependent methods.
            ``None``: the pool has no data (data-free methods only).
        head_cache_dir: zero-shot head cache; ``None``: ``<cache_dir()>/zero_shot_heads``.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        validate: bool = True,
        clip_model: str | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        head_cache_dir: str | None = None,
    ) -> None:
        super().__init__(models, validate)
        from fusion_bench.zero_shot.tasks import parse_task, plain

        tasks = plain(tasks) or {}
        self.tasks = {
            str(n): parse_task(str(n), c, f"modelpool.tasks.{n}") for n, c in tasks.items()
        }
        self.clip_model = clip_model
        if head_cache_dir is None:
            from fusion_bench.constants import cache_dir

            head_cache_dir = str(cache_dir() / "zero_shot_heads")
        self.head_cache_dir = str(head_cache_dir)
        self._classifier: CLIPZeroShotClassifier | None = None

    # -- data-dependent methods ----------------------------------------------------------------
    def zero_shot_text_tower(self):
        """The text side of the CLIP these vision towers belong to (heads, transform, logits):
        ``clip_model``, else the ``_pretrained_`` CLIP. Task pools evaluating this pool's models
        with a text tower of another library switch to this one."""
        from fusion_bench.zero_shot.text_towers import HFTextTower

        return HFTextTower(
            self.clip_model or self.location(PRETRAINED),
            hint="modelpool.clip_model=/path/to/clip",
        )

    def classifier(self) -> CLIPZeroShotClassifier:
        """The zero-shot classifier over this pool's tasks (nothing loads until it is used)."""
        if self._classifier is None:
            from fusion_bench.zero_shot.classifier import CLIPZeroShotClassifier

            if not self.tasks:
                raise FusionBenchError(
                    "this method needs task data but the model pool has none; add "
                    "modelpool.tasks.<task>.dataset=<location> (see config/modelpool/*.yaml)"
                )
            self._classifier = CLIPZeroShotClassifier(
                self.zero_shot_text_tower(), self.tasks, self.head_cache_dir, "modelpool"
            )
        return self._classifier

    def task_dataset(self, task: str, split: str = "train"):
        """``(pixel_values, label)`` dataset of ``task``'s train / validation / test split."""
        clf = self.classifier()
        t = clf.task(task)
        splits = {"train": t.train_split, "validation": t.validation_split, "test": t.split}
        if split not in splits:
            raise ValueError(f"split must be one of {', '.join(splits)}, got {split!r}")
        return clf.task_data(task, splits[split])

    def task_logits(self, model: nn.Module, task: str, inputs: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits of vision tower ``model`` on ``task`` for ``inputs`` (pixel values)."""
        clf = self.classifier().to(inputs.device)
        return clf.logits(model, inputs, clf.head_on(task, inputs.device))

    def mlp_names(self, model: nn.Module) -> list[str]:
        """The MLP of every encoder layer (``encoder.layers.<i>.mlp``)."""
        return [n for n, _ in model.named_modules() if n.endswith(".mlp")]

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
        from fusion_bench.utils.io import save_pretrained_atomic

        save_pretrained_atomic(model, path)
