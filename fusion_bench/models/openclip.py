"""open_clip models: creating them offline-safely, and reading fine-tuned vision-tower checkpoints.

The vision tower of an open_clip ``CLIP`` is ``model.visual`` (a ``VisionTransformer`` whose
forward returns the *projected* image embedding: its ``proj`` belongs to the tower and is
fine-tuned with it). Fine-tuned checkpoints come as

* safetensors or ``torch.save`` state dicts (loaded with ``weights_only=True``), keyed like
  ``visual.state_dict()``, or with a prefix in front of ``visual.`` (a whole ``CLIP`` state dict,
  or the task-vectors release's ``ImageEncoder``: ``model.visual.*``); or
* pickled whole modules, as in the task-vectors release (Ilharco et al., "Editing Models with
  Task Arithmetic", arXiv 2212.04089): ``<arch>/zeroshot.pt``, ``<arch>/<Dataset>/finetuned.pt``.
  Unpickling runs code named by the file, so :func:`load_visual_checkpoint` does it only with
  ``allow_pickle=True``; ``scripts/convert_openclip_checkpoints.py`` turns such files into
  safetensors once.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError

if TYPE_CHECKING:
    import torch
    from torch import nn

CONVERTER = "scripts/convert_openclip_checkpoints.py"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


# -- creating models ---------------------------------------------------------------------------
def register_model_config(path: str) -> str:
    """Register the open_clip architecture config (JSON) at ``path`` (a local path or a
    ``tiny*://`` location) with ``open_clip.add_model_config``; return its architecture name (the
    file's stem)."""
    import open_clip

    from fusion_bench.utils.hub import resolve_location

    resolved, is_local = resolve_location(path)
    if not is_local or not Path(resolved).is_file():
        raise FusionBenchError(
            f"open_clip model config '{path}' is not a file; pass the path of an open_clip "
            "architecture JSON (modelpool.model_config=/path/to/arch.json)"
        )
    name = Path(resolved).stem
    if name not in open_clip.list_models():
        open_clip.add_model_config(resolved)
    return name


def _cached_tag_file(cfg: dict) -> str | None:
    """A local copy of a pretrained tag's weights (HF cache or open_clip's URL cache), if any."""
    hf = cfg.get("hf_hub")
    if hf:
        from huggingface_hub import try_to_load_from_cache

        parts = hf.strip("/").split("/")  # "org/repo/" or "org/repo/file"
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        for name in ([filename] if filename else []) + [
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ]:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def resolve_pretrained(arch: str, pretrained: str, *, hint: str) -> tuple[str, dict]:
    """``(value for open_clip's pretrained=, preprocessing of the tag)`` for a pretrained tag or
    checkpoint file.

    A checkpoint file (or ``tiny*://`` location) is used as it is. A tag of ``arch`` is passed to
    open_clip when the hub is reachable; offline, a cached copy of its weights is used, else a
    one-line error says to pass a local file (instead of a minute of download retries).
    """
    import open_clip

    from fusion_bench.utils.hub import hub_reachable, resolve_location

    path, is_local = resolve_location(pretrained)
    if is_local:
        if not Path(path).is_file():
            raise FusionBenchError(
                f"open_clip pretrained weights '{pretrained}' must be a checkpoint file, not a "
                f"directory; {hint}"
            )
        return path, {}
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "(none)"
        raise FusionBenchError(
            f"'{pretrained}' is neither a file nor an open_clip pretrained tag of '{arch}' "
            f"(tags: {tags}); {hint}"
        )
    if hub_reachable():
        return pretrained, {}
    cached = _cached_tag_file(cfg)
    if cached is None:
        raise FusionBenchError(
            f"cannot reach the hub to fetch open_clip weights '{arch}' / '{pretrained}' "
            f"(offline and not cached); pass a local checkpoint file instead: {hint}"
        )
    return cached, cfg


class _DropRandomInitWarning(logging.Filter):
    """Drops open_clip's "initialized randomly" warning for an architecture-only model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def create_clip(
    arch: str, pretrained: str | None, *, hint: str, model_config: str | None = None
) -> tuple[nn.Module, Any]:
    """``(open_clip CLIP in eval mode, its evaluation image transform)``.

    Args:
        arch: open_clip architecture name (``ViT-B-32``), or ``local-dir:`` / ``hf-hub:`` id.
        pretrained: pretrained tag (``openai``) or checkpoint file of the whole CLIP; ``None``:
            random initialisation (the architecture only, for weights loaded afterwards).
        hint: the config override that points at a local copy (for error messages).
        model_config: an architecture JSON to register first (custom architectures).
    """
    import open_clip

    if model_config is not None:
        registered = register_model_config(model_config)
        if registered != arch:
            raise FusionBenchError(
                f"model config '{model_config}' registers architecture '{registered}', but "
                f"arch is '{arch}'; set modelpool.arch={registered}"
            )
    if not arch.startswith(("local-dir:", "hf-hub:")) and arch not in open_clip.list_models():
        raise FusionBenchError(
            f"open_clip has no architecture '{arch}'; pick one of open_clip.list_models() "
            "or register a config with modelpool.model_config=/path/to/arch.json"
        )
    kwargs: dict[str, Any] = {}
    if pretrained is not None:
        value, tag_cfg = resolve_pretrained(arch, pretrained, hint=hint)
        kwargs["pretrained"] = value
        if tag_cfg:  # a cached file standing in for a tag keeps the tag's preprocessing
            kwargs.update(image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"))
            kwargs.update(force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
    quiet = _DropRandomInitWarning() if pretrained is None else None
    root_logger = logging.getLogger()
    if quiet is not None:  # weights are loaded right after: the warning would mislead
        root_logger.addFilter(quiet)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, **kwargs)
    except (RuntimeError, pickle.UnpicklingError) as e:
        if pretrained is None:
            raise
        first = str(e).strip().splitlines()[0][:200]
        raise FusionBenchError(
            f"open_clip cannot load '{pretrained}' as a whole {arch} CLIP ({first}); give a "
            f"whole-CLIP checkpoint in safetensors / state-dict form: {hint}"
        ) from None
    finally:
        if quiet is not None:
            root_logger.removeFilter(quiet)
    return model.eval(), preprocess


# -- reading checkpoints -----------------------------------------------------------------------
def visual_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision-tower part of a checkpoint's state dict, keyed like ``visual.state_dict()``.

    Keys holding a ``visual.`` segment (a whole CLIP: ``visual.conv1.weight``; the task-vectors
    ``ImageEncoder``: ``model.visual.conv1.weight``) keep what follows it; a state dict without
    such keys is taken to be the vision tower's own. A leading ``module.`` (DDP) is dropped.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    marked = {k: v for k, v in sd.items() if k.startswith("visual.") or ".visual." in k}
    if not marked:
        return sd
    out = {}
    for key, value in marked.items():
        idx = 0 if key.startswith("visual.") else key.index(".visual.") + 1
        out[key[idx + len("visual.") :]] = value
    return out


class _Stub:
    """Stands in for a class of a pickle whose code is not installed (e.g. the task-vectors
    repository's ``src.modeling.ImageEncoder``): only the attributes are restored."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


def _stub_module():
    from torch import nn

    class _StubModule(nn.Module):
        """Placeholder ``nn.Module`` subclass: ``state_dict()`` works from the restored dicts."""

    return _StubModule


class _LenientUnpickler(pickle.Unpickler):
    """Unpickler that resolves classes it cannot import to placeholders (modules stay modules).

    Only used behind the explicit ``allow_pickle`` opt-in: unpickling still runs the reduce
    functions the file names (e.g. torch's tensor rebuilders)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            # Names ending like a module class (ImageEncoder, ClassificationHead, ...) become a
            # module placeholder so their submodules' state dicts can be read.
            return _stub_module() if name[:1].isupper() else _Stub


def _lenient_load(file, **kwargs: Any) -> Any:
    return _LenientUnpickler(file, **kwargs).load()


class _LenientPickle:
    """The ``pickle_module`` given to ``torch.load`` (zip files use ``Unpickler``, legacy
    files ``load``: both resolve classes leniently)."""

    Unpickler = _LenientUnpickler
    load = staticmethod(_lenient_load)
    __name__ = "fusion_bench_lenient_pickle"


def load_pickled_module(path: str) -> Any:
    """Unpickle a whole-module checkpoint (runs code named by the file: trusted files only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LenientPickle)


def _tensors_of(obj: Any, path: str) -> dict[str, torch.Tensor]:
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        inner = obj.get("state_dict", obj)
        if isinstance(inner, dict):
            return inner
    raise FusionBenchError(f"'{path}' holds a {type(obj).__name__}, not a module or a state dict")


def load_visual_checkpoint(path: str, *, allow_pickle: bool = False, what: str = "checkpoint"):
    """The vision-tower state dict (see :func:`visual_keys`) of the checkpoint file ``path``.

    Safetensors and plain ``torch.save`` state dicts load without running code. A pickled
    module loads only with ``allow_pickle=True``; otherwise a one-line error names the opt-in and
    the converter.
    """
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return visual_keys(load_file(path))
    if not path.endswith(_PICKLE_SUFFIXES):
        raise FusionBenchError(
            f"{what}: '{path}' is not a checkpoint file (.safetensors, .pt, .pth, .bin, .ckpt)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise FusionBenchError(
                f"{what}: '{path}' is a pickled module and loading it runs code from the file; "
                f"convert it once with `python {CONVERTER} --allow-pickle {path}` (writes "
                f"{Path(path).with_suffix('.safetensors').name}), or if you trust it set "
                "modelpool.allow_pickle=true"
            ) from None
        obj = load_pickled_module(path)
    return visual_keys(_tensors_of(obj, path))


def load_visual_into(visual: nn.Module, state_dict: dict, *, what: str, location: str) -> None:
    """Load ``state_dict`` strictly into the vision tower ``visual`` with a one-line error."""
    own = visual.state_dict()
    problem = next((f"missing key '{k}'" for k in own if k not in state_dict), None)
    problem = problem or next((f"unexpected key '{k}'" for k in state_dict if k not in own), None)
    problem = problem or next(
        (
            f"key '{k}' has shape {tuple(v.shape)}, the tower {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if tuple(v.shape) != tuple(own[k].shape)
        ),
        None,
    )
    if problem is not None:
        raise FusionBenchError(
            f"{what} ({location}): the checkpoint does not fit the open_clip vision tower "
            f"(first {problem}); check modelpool.arch"
        )
    visual.load_state_dict(state_dict)


def save_state_dict(
    state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None
) -> Path:
    """Write ``state_dict`` to ``path`` (safetensors) atomically."""
    from safetensors.torch import save

    from fusion_bench.utils.io import atomic_write_bytes

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))
