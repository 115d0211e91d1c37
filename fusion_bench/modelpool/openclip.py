"""Model pool of open_clip vision towers (``open_clip.CLIP.visual``).

The pretrained tower comes from ``open_clip.create_model_and_transforms(arch, pretrained=...)``
(a pretrained tag such as ``openai``, or a checkpoint file); each expert is a checkpoint file
loaded onto a copy of it: safetensors or plain state dicts, keyed like ``visual.state_dict()`` or
with a prefix before ``visual.`` (whole CLIP, task-vectors ``ImageEncoder``). Pickled whole
modules (the task-vectors release) load only with ``allow_pickle=true``; convert them once with
``scripts/convert_openclip_checkpoints.py`` instead.

Everything task-related (datasets, zero-shot heads for data-dependent methods) is shared with the
Hugging Face CLIP pool; only the text tower (open_clip's, with its tokenizer and transforms) and
the adapter names differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.constants import PRETRAINED
from fusion_bench.errors import FusionBenchError
from fusion_bench.modelpool.clip_vision import CLIPVisionModelPool

if TYPE_CHECKING:
    from torch import nn


class OpenCLIPVisionModelPool(CLIPVisionModelPool):
    """open_clip vision towers: ``_pretrained_`` plus one fine-tuned expert per task.

    Args:
        models: ``name -> location``. ``_pretrained_`` is a pretrained tag of ``arch``
            (``openai``) or a checkpoint file (whole CLIP, or the vision tower alone when
            ``clip_pretrained`` gives the text side); experts are checkpoint files.
        arch: open_clip architecture name (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, or a name
            registered by ``model_config``).
        validate: check keys / shapes / dtypes / finiteness of all models before any work.
        clip_pretrained: pretrained tag or whole-CLIP checkpoint whose text tower gives the task
            heads; ``None``: the ``_pretrained_`` location.
        model_config: an open_clip architecture JSON registered with
            ``open_clip.add_model_config`` before anything loads (custom architectures).
        tokenizer: a Hugging Face tokenizer location used through open_clip's ``HFTokenizer``;
            ``None``: ``open_clip.get_tokenizer(arch)``.
        allow_pickle: allow unpickling whole-module checkpoints (runs code from the files).
        tasks / head_cache_dir: as for :class:`CLIPVisionModelPool`.
        checkpoint_dir: where the expert checkpoints live (the shipped configs build the expert
            paths from it); not read by the pool itself.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        arch: str,
        validate: bool = True,
        clip_pretrained: str | None = None,
        model_config: str | None = None,
        tokenizer: str | None = None,
        allow_pickle: bool = False,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        head_cache_dir: str | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        super().__init__(models, validate, None, tasks, head_cache_dir)
        self.arch = str(arch)
        self.clip_pretrained = clip_pretrained
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.allow_pickle = bool(allow_pickle)
        self.checkpoint_dir = checkpoint_dir
        self._template: nn.Module | None = None  # the pretrained tower, copied for each expert

    def _hint(self, name: str) -> str:
        return f"modelpool.models.{name}=/path/to/checkpoint"

    # -- text side and adapters ----------------------------------------------------------------
    def zero_shot_text_tower(self):
        """open_clip's text tower, tokenizer and transforms of ``clip_pretrained`` (default: the
        ``_pretrained_`` location)."""
        from fusion_bench.zero_shot.text_towers import OpenCLIPTextTower

        return OpenCLIPTextTower(
            self.arch,
            self.clip_pretrained or self.location(PRETRAINED),
            hint="modelpool.clip_pretrained=/path/to/clip_checkpoint",
            tokenizer=self.tokenizer,
            model_config=self.model_config,
        )

    def mlp_names(self, model: nn.Module) -> list[str]:
        """The MLP of every residual block (``transformer.resblocks.<i>.mlp``)."""
        return [n for n, _ in model.named_modules() if n.endswith(".mlp")]

    def linear_names(self, model: nn.Module) -> list[str]:
        """Linear layers called as modules: the MLPs' ``c_fc`` / ``c_proj``.

        ``nn.MultiheadAttention`` reads its ``out_proj`` weight directly (its forward never
        runs), and its input projection is a plain parameter, so the attention weights are not
        treated layer by layer (RegMean merges them like other parameters; SMILE keeps them as
        merged weights).
        """
        from torch import nn

        attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
        return [
            n
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(n.startswith(a + ".") for a in attention)
        ]

    # -- loading -------------------------------------------------------------------------------
    def _pretrained_tower(self) -> nn.Module:
        """The ``_pretrained_`` tower, loaded once: from its tag, or its checkpoint file loaded
        onto the (randomly initialised) architecture."""
        if self._template is None:
            from fusion_bench.models.openclip import create_clip
            from fusion_bench.utils.hub import resolve_location

            location = self.location(PRETRAINED)
            hint = self._hint(PRETRAINED)
            path, is_local = resolve_location(location)
            if is_local:
                clip, _ = create_clip(self.arch, None, hint=hint, model_config=self.model_config)
                self._load_file_into(clip.visual, PRETRAINED, location)
            else:
                clip, _ = create_clip(self.arch, path, hint=hint, model_config=self.model_config)
            self._template = clip.visual.eval()
        return self._template

    def _load_file_into(self, tower: nn.Module, name: str, location: str) -> None:
        from pathlib import Path

        from fusion_bench.models.openclip import load_visual_checkpoint, load_visual_into
        from fusion_bench.utils.hub import resolve_location

        path, is_local = resolve_location(location)
        if not is_local or not Path(path).is_file():
            raise FusionBenchError(
                f"model '{name}': '{location}' is not a checkpoint file; open_clip experts are "
                f"local files (README: 'open_clip model pools'): {self._hint(name)}"
            )
        sd = load_visual_checkpoint(path, allow_pickle=self.allow_pickle, what=f"model '{name}'")
        load_visual_into(tower, sd, what=f"model '{name}'", location=path)

    def _load(self, name: str, location: str) -> nn.Module:
        import copy

        tower = copy.deepcopy(self._pretrained_tower())
        if name != PRETRAINED:
            self._load_file_into(tower, name, location)
        return tower

    def save_model(self, model: nn.Module, path: str) -> None:
        """The fused tower's state dict as ``<path>/visual.safetensors`` (keys of
        ``visual.state_dict()``, loadable as an expert of this pool), with the architecture."""
        from pathlib import Path

        from fusion_bench.models.openclip import save_state_dict

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        save_state_dict(model.state_dict(), out / "visual.safetensors", {"arch": self.arch})
