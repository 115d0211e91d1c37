#!/usr/bin/env python
"""Convert open_clip vision-tower checkpoints (e.g. the task-vectors release) to safetensors, once.

The task-vectors release (Ilharco et al., "Editing Models with Task Arithmetic", arXiv
2212.04089) ships pickled whole modules: ``<arch>/zeroshot.pt`` and
``<arch>/<Dataset>/finetuned.pt``. Unpickling them runs code named by the files, so this script
does it only with ``--allow-pickle`` (trusted files only), and writes each vision tower's state
dict (keys of ``open_clip.CLIP.visual.state_dict()``) to ``<same name>.safetensors`` beside it.
The ``openclip-vit-*`` model pools then load the safetensors files without running any code.

Usage::

    python scripts/convert_openclip_checkpoints.py --allow-pickle checkpoints/task_vectors/ViT-B-32
    python scripts/convert_openclip_checkpoints.py --allow-pickle path/to/finetuned.pt

A directory is searched recursively for ``zeroshot.pt`` and ``finetuned.pt`` (classification
heads, ``head_*.pt``, are not vision towers and are left alone). Existing outputs are kept unless
``--force``. Plain state-dict files (``torch.save(state_dict)``) convert without the flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOWER_FILES = ("zeroshot.pt", "finetuned.pt")


def find_checkpoints(paths: list[str]) -> list[Path]:
    """The files to convert: files as given, directories searched for :data:`TOWER_FILES`."""
    from fusion_bench.errors import FusionBenchError

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(f for name in TOWER_FILES for f in p.rglob(name))
            if not found:
                raise FusionBenchError(
                    f"no {' / '.join(TOWER_FILES)} under '{p}'; pass checkpoint files directly"
                )
            out.extend(found)
        else:
            raise FusionBenchError(f"'{p}' does not exist; pass checkpoint files or directories")
    return out


def convert(path: Path, *, allow_pickle: bool, force: bool) -> str:
    """Convert one checkpoint; return the line to print."""
    from fusion_bench.errors import FusionBenchError
    from fusion_bench.models.openclip import load_visual_checkpoint, save_state_dict

    target = path.with_suffix(".safetensors")
    if target.exists() and not force:
        return f"kept      {target} (exists; --force to overwrite)"
    sd = load_visual_checkpoint(str(path), allow_pickle=allow_pickle, what="checkpoint")
    if not any(k == "conv1.weight" or k.endswith(".conv1.weight") for k in sd) and not any(
        k.startswith("trunk.") for k in sd
    ):
        raise FusionBenchError(
            f"'{path}' holds no open_clip vision tower (no conv1 / trunk weights among its "
            f"{len(sd)} tensors); is it a classification head?"
        )
    save_state_dict(sd, target, {"source": path.name, "format": "open_clip visual state dict"})
    n = sum(v.numel() for v in sd.values())
    return f"converted {path} -> {target} ({len(sd)} tensors, {n / 1e6:.2f}M parameters)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="checkpoint files or directories")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="unpickle whole-module checkpoints (runs code from the files: trusted files only)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args(argv)
    from fusion_bench.errors import FusionBenchError

    try:
        files = find_checkpoints(args.paths)
        for f in files:
            print(convert(f, allow_pickle=args.allow_pickle, force=args.force), flush=True)
    except FusionBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
