"""The tiny CLIP benchmark converted to open_clip formats, built locally on first use.

The real open_clip benchmark evaluates ``open_clip`` ViTs (``ViT-B-32`` with task-arithmetic
experts stored as open_clip state dicts). This is its miniature: the tiny Hugging Face CLIP of
:mod:`fusion_bench.tinybench` (a pretrained ``CLIPModel`` and one fine-tuned
``CLIPVisionModel`` per task) with its weights renamed into open_clip's layout. The conversion is
exact: an open_clip ``CLIP`` built from the written config computes the same image and text
features as the Hugging Face model, so evaluating the open_clip tiny pool reproduces the numbers
of the Hugging Face tiny pool::

    <cache_dir()>/tiny_openclip/<profile>-seed<seed>-v<version>/
        fb-tiny-<profile>.json      open_clip model config (``open_clip.add_model_config``
                                    registers it as architecture ``fb-tiny-<profile>``)
        pretrained.safetensors      state dict of the whole open_clip ``CLIP``
        experts/<task>.safetensors  state dict of ``CLIP.visual``, one per task (the expert's
                                    vision tower with the *pretrained* CLIP's projection)
        tokenizer/                  the tiny word-level tokenizer (``AutoTokenizer`` files), for
                                    ``open_clip.tokenizer.HFTokenizer(dir, context_length=...)``
        SOURCE-tiny_clip-v<N>.json  ``BUILD_INFO.json`` of the converted Hugging Face build
                                    (its accuracies; the name invalidates this build when the
                                    tiny CLIP recipe version ``N`` changes)
        BUILD_INFO.json             profile, seed, version, source (written last)

Configs point at it with ``tiny-openclip://<profile>/<relative path>`` (see
:mod:`fusion_bench.utils.hub`).

Image preprocessing: open_clip's model config json has no place for the mean / std / size of
the preprocessing (``create_model`` passes every key of the config to ``CLIP(...)``, so an extra
``preprocess_cfg`` key raises a ``TypeError``; open_clip takes it only from a pretrained tag,
an ``open_clip_config.json`` of a ``local-dir:`` / ``hf-hub:`` model, or
``force_preprocess_cfg``). None is needed: the tiny benchmark normalises with OpenAI's CLIP
mean / std, which are open_clip's defaults (``OPENAI_DATASET_MEAN`` / ``OPENAI_DATASET_STD``),
and its images already have the model's size, which ``create_model`` takes from the vision
config.

Mapping of the weights (Hugging Face -> open_clip), per tower (the vision keys are below
``vision_model.`` in a ``CLIPModel`` and in a transformers 4 ``CLIPVisionModel``, at the top
level of a transformers 5 ``CLIPVisionModel``, as the experts are saved):

* vision: ``embeddings.patch_embedding`` -> ``conv1``, ``embeddings.class_embedding`` ->
  ``class_embedding``, ``embeddings.position_embedding`` -> ``positional_embedding``,
  ``pre_layrnorm`` -> ``ln_pre``, ``post_layernorm`` -> ``ln_post``,
  ``visual_projection.weight.T`` -> ``proj``;
* text: ``embeddings.token_embedding`` -> ``token_embedding``,
  ``embeddings.position_embedding`` -> ``positional_embedding``, ``final_layer_norm`` ->
  ``ln_final``, ``text_projection.weight.T`` -> ``text_projection``; ``logit_scale`` as is;
* each encoder layer ``i``: ``layer_norm1`` / ``layer_norm2`` -> ``ln_1`` / ``ln_2``,
  ``self_attn.{q,k,v}_proj`` concatenated -> ``attn.in_proj_{weight,bias}``,
  ``self_attn.out_proj`` -> ``attn.out_proj``, ``mlp.fc1`` / ``mlp.fc2`` -> ``mlp.c_fc`` /
  ``mlp.c_proj`` (open_clip's ``transformer.resblocks.{i}``).

Text pooling: Hugging Face pools the text tower at the first ``eos_token_id`` token, except when
``eos_token_id == 2`` (its legacy arg-max of the token ids); open_clip's ``pool_type: "eos"``
with ``eos_id`` and ``pool_type: "argmax"`` are exactly these. open_clip adds all
``context_length`` positional embeddings, so its token ids must be padded to ``context_length``
(``HFTokenizer`` does); with right padding and the causal mask the pooled token never sees the
padding, as in Hugging Face with its attention mask.

Importing this module is cheap; torch / transformers / open_clip / safetensors load only in the
functions that need them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_bench.tinybench import BUILD_VERSION as SOURCE_VERSION
from fusion_bench.tinybench import PROFILES, TASKS, Profile
from fusion_bench.tinybench._cache import TinyBenchmark

if TYPE_CHECKING:
    import torch
    import transformers

VERSION = 1
"""Bump whenever the conversion or the layout changes, so old caches are not reused."""

OPEN_CLIP_LAYER_NORM_EPS = 1e-5
"""The eps of open_clip's ``LayerNorm`` (torch's default); other values are not converted."""

_ACTIVATIONS = ("quick_gelu", "gelu")

# Hugging Face encoder-layer module -> open_clip residual-block module (weight and bias each).
_LAYER_RENAMES = (
    ("layer_norm1", "ln_1"),
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)
# A buffer that old transformers versions saved (persistent ``position_ids``): not a weight.
_POSITION_IDS = "embeddings.position_ids"


def arch_name(profile: str) -> str:
    """The open_clip architecture name of the tiny build of ``profile``: ``fb-tiny-<profile>``
    (also the stem of its model config json)."""
    return f"fb-tiny-{profile}"


def _mlp_ratio(intermediate: int, width: int, what: str) -> float:
    ratio = intermediate / width
    if int(width * ratio) != intermediate:  # open_clip builds the MLP as int(width * mlp_ratio)
        raise ValueError(
            f"{what}: intermediate_size {intermediate} is not int(width * ratio) for any float "
            f"ratio open_clip can represent (width {width})"
        )
    return ratio


def _heads(width: int, heads: int, what: str) -> int:
    if width % heads:
        raise ValueError(f"{what}: hidden_size {width} is not divisible by {heads} heads")
    return heads


def open_clip_model_config(config: transformers.CLIPConfig) -> dict[str, Any]:
    """The open_clip model config (the format of ``open_clip/model_configs/*.json``) of a
    Hugging Face ``CLIPConfig``.

    Written to ``<name>.json`` and registered with ``open_clip.add_model_config(path)``,
    ``open_clip.create_model(<name>)`` builds a ``CLIP`` whose state dict is the one of
    :func:`open_clip_state_dict`.

    Args:
        config: the ``config`` of a ``transformers.CLIPModel``.

    Returns:
        ``{"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}``; the text config pools with
        ``pool_type: "eos"`` at the first ``eos_id`` token, or with ``pool_type: "argmax"``
        when ``eos_token_id == 2`` (transformers' legacy pooling).

    Raises:
        ValueError: a configuration open_clip's ``CLIP`` cannot reproduce: different or
            unsupported activations (only ``quick_gelu`` and ``gelu``), a layer-norm eps other
            than open_clip's 1e-5, images with other than 3 channels, no ``eos_token_id``, an
            MLP width that is no ``int(width * ratio)``, heads not dividing the width.
    """
    vision, text = config.vision_config, config.text_config
    acts = {"vision": vision.hidden_act, "text": text.hidden_act}
    if acts["vision"] != acts["text"]:
        raise ValueError(
            f"the towers' activations differ ({acts}); open_clip uses one for both towers"
        )
    if acts["vision"] not in _ACTIVATIONS:
        raise ValueError(
            f"activation {acts['vision']!r} is not supported by open_clip's CLIP "
            f"(only {' / '.join(_ACTIVATIONS)})"
        )
    for what, cfg in (("vision", vision), ("text", text)):
        if cfg.layer_norm_eps != OPEN_CLIP_LAYER_NORM_EPS:
            raise ValueError(
                f"{what} tower: layer_norm_eps {cfg.layer_norm_eps} differs from open_clip's "
                f"LayerNorm eps {OPEN_CLIP_LAYER_NORM_EPS}"
            )
    if getattr(vision, "num_channels", 3) != 3:
        raise ValueError(f"open_clip's ViT takes RGB images, not {vision.num_channels} channels")
    if text.eos_token_id is None:
        raise ValueError("text_config.eos_token_id is None: the text pooling is undefined")
    if text.eos_token_id == 2:  # transformers' legacy pooling: the arg-max of the token ids
        pooling: dict[str, Any] = {"pool_type": "argmax"}
    else:
        pooling = {"pool_type": "eos", "eos_id": int(text.eos_token_id)}
    vision_heads = _heads(vision.hidden_size, vision.num_attention_heads, "vision tower")
    return {
        "embed_dim": int(config.projection_dim),
        "quick_gelu": acts["vision"] == "quick_gelu",
        "vision_cfg": {
            "image_size": int(vision.image_size),
            "layers": int(vision.num_hidden_layers),
            "width": int(vision.hidden_size),
            "patch_size": int(vision.patch_size),
            "head_width": int(vision.hidden_size) // vision_heads,
            "mlp_ratio": _mlp_ratio(vision.intermediate_size, vision.hidden_size, "vision tower"),
        },
        "text_cfg": {
            "context_length": int(text.max_position_embeddings),
            "vocab_size": int(text.vocab_size),
            "width": int(text.hidden_size),
            "heads": _heads(text.hidden_size, text.num_attention_heads, "text tower"),
            "layers": int(text.num_hidden_layers),
            "mlp_ratio": _mlp_ratio(text.intermediate_size, text.hidden_size, "text tower"),
            **pooling,
        },
    }


def _fresh(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy sharing no storage (what safetensors ``save_file`` requires)."""
    import torch

    return tensor.detach().clone(memory_format=torch.contiguous_format)


def _num_layers(keys: Iterable[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def _encoder_map(
    hf: str, oc: str, layers: int
) -> tuple[dict[str, str], dict[str, tuple[str, str, str]]]:
    """``(plain, fused)`` key maps of ``layers`` encoder layers: open_clip key -> Hugging Face
    key, and open_clip ``in_proj`` key -> its Hugging Face ``(q, k, v)`` keys."""
    plain: dict[str, str] = {}
    fused: dict[str, tuple[str, str, str]] = {}
    for i in range(layers):
        h, o = f"{hf}encoder.layers.{i}.", f"{oc}transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            for hf_name, oc_name in _LAYER_RENAMES:
                plain[f"{o}{oc_name}.{p}"] = f"{h}{hf_name}.{p}"
            fused[f"{o}attn.in_proj_{p}"] = tuple(f"{h}self_attn.{x}_proj.{p}" for x in "qkv")
    return plain, fused


def _check_keys(
    state_dict: Mapping[str, Any], expected: list[str], ignored: str, what: str
) -> None:
    """Raise ``ValueError`` naming the first unexpected (other than ``ignored``), else the first
    missing key."""
    wanted = {*expected, ignored}
    unexpected = [k for k in state_dict if k not in wanted]
    missing = [k for k in expected if k not in state_dict]
    if unexpected:
        raise ValueError(
            f"not a {what} state dict: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected, {len(missing)} missing)"
        )
    if missing:
        raise ValueError(
            f"not a {what} state dict: missing key {missing[0]!r} ({len(missing)} missing)"
        )


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    plain: Mapping[str, str],
    fused: Mapping[str, tuple[str, str, str]],
) -> dict[str, torch.Tensor]:
    import torch

    out = {o: _fresh(state_dict[h]) for o, h in plain.items()}
    for o, qkv in fused.items():
        out[o] = torch.cat([state_dict[h].detach() for h in qkv], dim=0).contiguous()
    return out


def open_clip_visual_state_dict(
    hf_vision_state_dict: Mapping[str, torch.Tensor],
    visual_projection_weight: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The state dict of open_clip's ``CLIP.visual`` (a ``VisionTransformer``) equal to a
    Hugging Face vision tower and projection.

    Args:
        hf_vision_state_dict: ``CLIPVisionModel.state_dict()``: keys ``embeddings.*``,
            ``pre_layrnorm.*``, ``encoder.layers.{i}.*``, ``post_layernorm.*`` at the top level
            (transformers 5, and ``CLIPModel.vision_model.state_dict()``) or all below
            ``vision_model.`` (transformers 4, and a ``CLIPModel``'s state dict); the prefix is
            detected, mixing both is an error. A persistent ``embeddings.position_ids`` buffer
            (saved by old transformers) is ignored.
        visual_projection_weight: ``CLIPModel.visual_projection.weight``,
            ``[projection_dim, hidden_size]`` (a fine-tuned ``CLIPVisionModel`` has none: pass
            the pretrained model's).

    Returns:
        open_clip keys (``conv1.weight``, ``class_embedding``, ``positional_embedding``,
        ``ln_pre.*``, ``transformer.resblocks.{i}.*``, ``ln_post.*``, ``proj``) -> fresh
        contiguous tensors (``proj`` is the transposed projection).

    Raises:
        ValueError: a key other than those of a ``CLIPVisionModel`` in one of the two layouts
            (the message names the first unexpected, else the first missing one), or a
            projection whose input width is not the tower's.
    """
    hf = "vision_model." if any(k.startswith("vision_model.") for k in hf_vision_state_dict) else ""
    layers = _num_layers(hf_vision_state_dict, hf)
    plain = {
        "conv1.weight": f"{hf}embeddings.patch_embedding.weight",
        "class_embedding": f"{hf}embeddings.class_embedding",
        "positional_embedding": f"{hf}embeddings.position_embedding.weight",
        "ln_pre.weight": f"{hf}pre_layrnorm.weight",
        "ln_pre.bias": f"{hf}pre_layrnorm.bias",
        "ln_post.weight": f"{hf}post_layernorm.weight",
        "ln_post.bias": f"{hf}post_layernorm.bias",
    }
    layer_plain, fused = _encoder_map(hf, "", layers)
    plain.update(layer_plain)
    expected = list(plain.values()) + [k for qkv in fused.values() for k in qkv]
    _check_keys(hf_vision_state_dict, expected, f"{hf}{_POSITION_IDS}", "CLIPVisionModel")
    width = hf_vision_state_dict[f"{hf}embeddings.class_embedding"].shape[-1]
    if visual_projection_weight.ndim != 2 or visual_projection_weight.shape[1] != width:
        raise ValueError(
            f"visual_projection_weight of shape {tuple(visual_projection_weight.shape)} does not "
            f"project the vision tower's width {width} ([projection_dim, {width}] expected)"
        )
    out = _convert(hf_vision_state_dict, plain, fused)
    out["proj"] = _fresh(visual_projection_weight.T)
    return out


def open_clip_state_dict(hf_clip_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of open_clip's ``CLIP`` equal to a Hugging Face ``CLIPModel``.

    open_clip's causal ``attn_mask`` is a non-persistent buffer, so it is not part of it.

    Args:
        hf_clip_state_dict: ``CLIPModel.state_dict()`` (``vision_model.*``,
            ``visual_projection.weight``, ``text_model.*``, ``text_projection.weight``,
            ``logit_scale``).

    Returns:
        open_clip keys (``visual.*`` as in :func:`open_clip_visual_state_dict`,
        ``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.{i}.*``,
        ``ln_final.*``, ``text_projection`` (transposed), ``logit_scale``) -> fresh contiguous
        tensors.

    Raises:
        ValueError: a key other than those of a ``CLIPModel`` (the message names the first
            unexpected, else the first missing one).
    """
    vision_prefix, projection = "vision_model.", "visual_projection.weight"
    rest = {k: v for k, v in hf_clip_state_dict.items() if not k.startswith(vision_prefix)}
    hf = "text_model."
    plain = {
        "token_embedding.weight": f"{hf}embeddings.token_embedding.weight",
        "positional_embedding": f"{hf}embeddings.position_embedding.weight",
        "ln_final.weight": f"{hf}final_layer_norm.weight",
        "ln_final.bias": f"{hf}final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    layer_plain, fused = _encoder_map(hf, "", _num_layers(rest, hf))
    plain.update(layer_plain)
    expected = list(plain.values()) + [k for qkv in fused.values() for k in qkv]
    expected += [projection, "text_projection.weight"]
    _check_keys(rest, expected, f"{hf}{_POSITION_IDS}", "CLIPModel")
    vision = {k: v for k, v in hf_clip_state_dict.items() if k.startswith(vision_prefix)}
    visual = open_clip_visual_state_dict(vision, rest[projection])
    out = {f"visual.{k}": v for k, v in visual.items()}
    out.update(_convert(rest, plain, fused))
    out["text_projection"] = _fresh(rest["text_projection.weight"].T)
    return out


def _source_info_name() -> str:
    return f"SOURCE-tiny_clip-v{SOURCE_VERSION}.json"


def _needed(root: Path) -> list[Path]:
    """The files of a complete build at ``root`` (``<profile>-seed<seed>-v<version>``, which
    names the profile of the config json)."""
    profile = root.name.split("-seed")[0]
    needed = [root / f"{arch_name(profile)}.json", root / "pretrained.safetensors"]
    needed += [root / "experts" / f"{t}.safetensors" for t in TASKS]
    return needed + [root / "tokenizer" / "tokenizer_config.json", root / _source_info_name()]


def build_files(out: Path, *, profile: str, params: Profile, seed: int) -> dict[str, Any]:
    """Write the open_clip conversion of the tiny CLIP build of ``profile`` / ``seed`` into
    ``out`` (building that first if needed); everything but ``BUILD_INFO.json``, which
    :meth:`~fusion_bench.tinybench._cache.TinyBenchmark.ensure_built` writes last.

    Args:
        out: the (temporary) build directory.
        profile: a tiny CLIP profile name.
        params: its :class:`~fusion_bench.tinybench.Profile` (unused: the sizes come from
            the source build's config).
        seed: the source build's seed.

    Returns:
        The build's information for ``BUILD_INFO.json``: source root, architecture name,
        tasks, timing.

    Raises:
        ValueError: the source build cannot be converted (see :func:`open_clip_model_config`)
            or an expert's vision tower differs in shape from the pretrained one.
    """
    import json
    import shutil
    import time

    from safetensors.torch import save_file
    from transformers import AutoTokenizer, CLIPModel, CLIPVisionModel

    from fusion_bench.tinybench import ensure_built as ensure_hf_built

    t0 = time.perf_counter()
    hf_root = Path(ensure_hf_built(profile, seed=seed))
    t_source = time.perf_counter() - t0
    arch = arch_name(profile)
    metadata = {"format": "pt"}

    clip = CLIPModel.from_pretrained(hf_root / "pretrained").eval()
    config = open_clip_model_config(clip.config)
    (out / f"{arch}.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = clip.state_dict()
    pretrained = open_clip_state_dict(state)
    save_file(pretrained, str(out / "pretrained.safetensors"), metadata=metadata)

    projection = state["visual_projection.weight"]
    shapes = {k[7:]: tuple(v.shape) for k, v in pretrained.items() if k.startswith("visual.")}
    (out / "experts").mkdir()
    for task in TASKS:
        expert = CLIPVisionModel.from_pretrained(hf_root / "experts" / task)
        visual = open_clip_visual_state_dict(expert.state_dict(), projection)
        got = {k: tuple(v.shape) for k, v in visual.items()}
        if got != shapes:
            bad = sorted(k for k in got.keys() | shapes.keys() if got.get(k) != shapes.get(k))
            raise ValueError(
                f"expert {task} does not fit the pretrained vision tower: {bad[0]} has shape "
                f"{got.get(bad[0])}, the pretrained one {shapes.get(bad[0])}"
            )
        save_file(visual, str(out / "experts" / f"{task}.safetensors"), metadata=metadata)

    AutoTokenizer.from_pretrained(hf_root / "pretrained").save_pretrained(out / "tokenizer")
    shutil.copyfile(hf_root / "BUILD_INFO.json", out / _source_info_name())
    return {
        "source": str(hf_root),
        "source_version": SOURCE_VERSION,
        "arch": arch,
        "context_length": config["text_cfg"]["context_length"],
        "tasks": list(TASKS),
        "timings_s": {"source": t_source, "total": time.perf_counter() - t0},
    }


BENCHMARK = TinyBenchmark(
    name="tiny_openclip",
    what="tiny open_clip benchmark",
    version=VERSION,
    profiles=PROFILES,
    needed=_needed,
    builder="fusion_bench.tinybench.openclip",
    sources={"tiny_clip": SOURCE_VERSION},
)
"""The cache layout and builder; the functions below are its methods."""

build_root = BENCHMARK.root
is_complete = BENCHMARK.is_complete
ensure_built = BENCHMARK.ensure_built
