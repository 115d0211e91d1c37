#!/usr/bin/env python
"""Fine-tune a CLIP vision tower on one image-classification task: an expert for a model pool.

    python scripts/finetune_clip.py --pretrained openai/clip-vit-base-patch32 --task eurosat \\
        --out experts/clip-vit-base-patch32_eurosat [--dataset tanganke/eurosat] [--split train]
        [--steps 4000] [--batch-size 32] [--lr 1e-5] [--layer-decay 1.0] [--warmup-steps 0]
        [--schedule cosine] [--accelerator auto] [--devices 1] [--precision 32-true]
        [--eval-split test] [--log-every 100] [--log-dir DIR] [--overwrite]

The recipe of the published ``tanganke/clip-vit-*_<task>`` experts (Ilharco et al., "Editing
Models with Task Arithmetic", arXiv 2212.04089): only the vision tower trains, with the
cross-entropy of CLIP's zero-shot logits against the task's *frozen* zero-shot head (class names
x prompt templates through the frozen text tower); Adam, lr 1e-5, 4000 steps, batch 32, cosine
schedule (:func:`fusion_bench.finetune.clip_vision.finetune_vision`, the function the offline
tiny benchmark trains its experts with). The tuned ``CLIPVisionModel`` is saved with
``save_pretrained`` (safetensors, atomically), ready for a pool:
``fusion_bench ... modelpool.models.<task>=<out>``.

Task data: ``--task`` names the task. Its dataset, subset and columns default to the task's
config (``config/taskpool/clip_task/<task>.yaml`` or ``clip_task/tiny/<task>.yaml``), its class
names and templates to the registry (``fusion_bench.tasks.clip_classification``). For a new
task give ``--dataset`` (hub id, ``save_to_disk`` dir, parquet file/dir) and either
``--classnames-from <registry task>`` or ``--classnames-from dataset`` (the names of the label
column's ``ClassLabel``, with ``--templates-from <registry task>`` or a generic template).

Offline demo on the tiny benchmark (built into ``$FUSION_BENCH_CACHE`` on first use)::

    python scripts/finetune_clip.py --pretrained tiny://smoke/pretrained --task colors \\
        --steps 20 --lr 3e-3 --batch-size 64 --threads 1 --eval-split test --out /tmp/colors_expert
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("finetune_clip")

GENERIC_TEMPLATES = ("a photo of a {}.",)


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 1, like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from fusion_bench.finetune.clip_vision import PUBLISHED_RECIPE, SCHEDULES

    r = PUBLISHED_RECIPE
    p = _Parser(
        prog="finetune_clip.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model and output")
    g.add_argument("--pretrained", required=True, help="CLIP: hub id, save_pretrained dir, tiny://")
    g.add_argument("--out", required=True, help="directory of the tuned CLIPVisionModel")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g = p.add_argument_group("task")
    g.add_argument("--task", required=True, help="task name (config / registry entry)")
    g.add_argument("--dataset", default=None, help="default: the task config's dataset")
    g.add_argument("--subset", default=None, help="hub configuration (e.g. cropped_digits)")
    g.add_argument("--split", default="train", help="split to train on")
    g.add_argument("--image-column", default=None, help="default: the task config's, or image")
    g.add_argument("--label-column", default=None, help="default: the task config's, or label")
    g.add_argument(
        "--classnames-from",
        default=None,
        help="registry task giving class names and templates, or 'dataset' (ClassLabel names); "
        "default: --task",
    )
    g.add_argument("--templates-from", default=None, help="registry task giving the templates")
    g.add_argument(
        "--tiny-profile",
        default=None,
        help="profile of tiny:// task datasets (default: that of --pretrained, else default)",
    )
    g = p.add_argument_group("recipe (defaults: the published experts')")
    g.add_argument("--steps", type=int, default=r["steps"])
    g.add_argument("--batch-size", type=int, default=r["batch_size"], help="per device")
    g.add_argument("--lr", type=float, default=r["lr"], help="Adam learning rate")
    g.add_argument("--layer-decay", type=float, default=r["layer_decay"], help="lr factor/layer")
    g.add_argument("--warmup-steps", type=int, default=r["warmup_steps"])
    g.add_argument("--schedule", default=r["schedule"], choices=SCHEDULES)
    g.add_argument("--seed", type=int, default=0, help="data order (and any dropout)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; small models on a busy CPU run far faster "
        "with 1)",
    )
    g = p.add_argument_group("Lightning Fabric")
    g.add_argument("--accelerator", default="auto", help="auto, cpu, cuda, ...")
    g.add_argument("--devices", default="1", help="number of devices, or a list like 0,1")
    g.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed, ...")
    g = p.add_argument_group("logging and evaluation")
    g.add_argument("--log-every", type=int, default=100, help="log the mean loss every N steps")
    g.add_argument("--log-dir", default=None, help="also write the losses to a CSV log here")
    g.add_argument(
        "--eval-split",
        default=None,
        help="report top-1 accuracy of the pretrained and the tuned tower on this split",
    )
    g.add_argument("--eval-limit", type=int, default=None, help="evaluate at most N batches")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    from fusion_bench.errors import FusionBenchError

    for name in ("steps", "batch_size", "threads", "log_every", "num_workers", "warmup_steps"):
        if getattr(args, name) is None:
            continue
        minimum = 1 if name in ("steps", "batch_size", "threads") else 0
        if getattr(args, name) < minimum:
            flag = "--" + name.replace("_", "-")
            raise FusionBenchError(f"{flag} must be >= {minimum}, got {getattr(args, name)}")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise FusionBenchError(f"--eval-limit must be >= 1, got {args.eval_limit}")
    if not args.lr > 0:
        raise FusionBenchError(f"--lr must be > 0, got {args.lr}")
    if not 0 < args.layer_decay <= 1:
        raise FusionBenchError(f"--layer-decay must be in (0, 1], got {args.layer_decay}")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise FusionBenchError(f"--out '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise FusionBenchError(f"--out '{out}' exists and is not empty; pass --overwrite")


def task_config_defaults(task: str, tiny_profile: str) -> dict[str, Any]:
    """The task's config (``taskpool/clip_task/<task>.yaml`` or ``.../tiny/<task>.yaml``) over
    the base task config, resolved (``${tiny_profile}``); empty if there is none."""
    from omegaconf import OmegaConf

    from fusion_bench.constants import config_dir

    root = config_dir() / "taskpool" / "clip_task"
    for path in (root / f"{task}.yaml", root / "tiny" / f"{task}.yaml"):
        if path.is_file():
            cfg = OmegaConf.load(path)
            cfg.pop("defaults", None)
            merged = OmegaConf.merge(OmegaConf.load(root / "_base.yaml"), cfg)
            wrapper = OmegaConf.create({"tiny_profile": tiny_profile, "task": merged})
            return OmegaConf.to_container(wrapper, resolve=True)["task"]
    return {}


def resolve_task(args: argparse.Namespace):
    """``(ImageTask, train dataset)``: the task config, overridden by the command line.

    Raises:
        FusionBenchError: no dataset, an unknown registry task, a missing column, or a class
            count that does not match the class names.
    """
    from fusion_bench.errors import FusionBenchError
    from fusion_bench.tasks.clip_classification import get_task
    from fusion_bench.utils.data import check_columns, load_dataset_split, num_label_classes
    from fusion_bench.zero_shot.tasks import parse_task

    profile = args.tiny_profile
    if profile is None:
        pre = str(args.pretrained)
        profile = pre[len("tiny://") :].split("/")[0] if pre.startswith("tiny://") else "default"
    cfg = task_config_defaults(args.task, profile)
    dataset = args.dataset or cfg.get("dataset")
    if not dataset or dataset == "???":
        raise FusionBenchError(
            f"task '{args.task}' has no task config giving its dataset; pass --dataset "
            "(hub id, save_to_disk dir or parquet path)"
        )
    image_col = args.image_column or cfg.get("image_column", "image")
    label_col = args.label_column or cfg.get("label_column", "label")
    subset = args.subset or cfg.get("subset", cfg.get("name"))
    what = f"dataset of task '{args.task}'"
    ds = load_dataset_split(
        dataset, split=args.split, subset=subset, what=what, hint="--dataset /path/to/dataset"
    )
    check_columns(ds, [image_col, label_col], task=args.task, hint="--image-column/--label-column")

    entry: dict[str, Any] = {
        "dataset": dataset,
        "split": args.split,
        "subset": subset,
        "image_column": image_col,
        "label_column": label_col,
        "metadata": cfg.get("metadata") or {"version": 1},
    }
    source = args.classnames_from or args.task
    if source == "dataset":
        names = getattr(ds.features.get(label_col), "names", None)
        if not names:
            raise FusionBenchError(
                f"--classnames-from dataset: column '{label_col}' is not a ClassLabel with names"
            )
        entry["classnames"] = list(names)
        templates_from = args.templates_from
        entry["templates"] = (
            list(get_task(templates_from).templates) if templates_from else list(GENERIC_TEMPLATES)
        )
    else:
        text = get_task(source)
        entry["classnames"] = list(text.classnames)
        entry["templates"] = list(get_task(args.templates_from or source).templates)
    task = parse_task(args.task, entry, f"task '{args.task}'")
    n = num_label_classes(ds, label_col)
    if n is not None and n != len(task.classnames):
        raise FusionBenchError(
            f"task '{args.task}': the dataset's label column has {n} classes but "
            f"{len(task.classnames)} class names come from '{source}'; pass --classnames-from"
        )
    if len(ds) == 0:
        raise FusionBenchError(f"task '{args.task}': split '{args.split}' is empty")
    return task, ds


def make_fabric(args: argparse.Namespace):
    from lightning.fabric import Fabric

    from fusion_bench.errors import FusionBenchError

    devices: Any = args.devices
    if "," in devices:
        devices = [int(d) for d in devices.split(",") if d]
    elif devices.lstrip("-").isdigit():
        devices = int(devices)
    loggers = []
    if args.log_dir:
        from lightning.fabric.loggers import CSVLogger

        loggers.append(CSVLogger(root_dir=args.log_dir, name="finetune_clip", version=""))
    try:
        fabric = Fabric(
            accelerator=args.accelerator,
            devices=devices,
            precision=args.precision,
            loggers=loggers,
        )
    except (ValueError, RuntimeError, TypeError) as e:
        raise FusionBenchError(f"cannot set up Lightning Fabric: {e}".splitlines()[0]) from None
    fabric.launch()
    return fabric


def endless(loader) -> Iterator[Any]:
    """The batches of ``loader``, epoch after epoch (reshuffled by the loader each epoch)."""
    while True:
        yield from loader


def load_models(args: argparse.Namespace, fabric):
    """``(clip, vision tower, tokenizer, image processor)`` from ``--pretrained``."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, CLIPVisionModel

    from fusion_bench.utils.hub import load_with_fallback

    kw = {"what": "pretrained CLIP", "hint": "--pretrained /path/to/clip_save_pretrained_dir"}
    clip = load_with_fallback(CLIPModel.from_pretrained, args.pretrained, **kw)
    tokenizer = load_with_fallback(AutoTokenizer.from_pretrained, args.pretrained, **kw)
    processor = load_with_fallback(AutoImageProcessor.from_pretrained, args.pretrained, **kw)
    vision = clip.vision_model
    if not isinstance(vision, CLIPVisionModel):  # transformers 4: the bare transformer
        wrapped = CLIPVisionModel(clip.config.vision_config)
        wrapped.vision_model = vision
        vision = wrapped
    return clip.eval(), vision, tokenizer, processor


def accuracy(fabric, clip, vision, head, loader, limit: int | None) -> float:
    """Top-1 zero-shot accuracy of ``vision`` with ``head`` on (at most ``limit`` batches of)
    ``loader``."""
    import torch

    from fusion_bench.models.clip_zero_shot import zero_shot_logits

    vision = fabric.to_device(vision).eval()
    correct = total = 0
    with torch.inference_mode():
        for i, (pixels, labels) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            pixels, labels = fabric.to_device((pixels, labels))
            with fabric.autocast():
                logits = zero_shot_logits(clip, vision, pixels, head)
            correct += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
    return correct / max(1, total)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from fusion_bench.finetune.clip_vision import finetune_vision
    from fusion_bench.models.clip_zero_shot import image_transform, zero_shot_head
    from fusion_bench.utils.io import atomic_write_json, save_pretrained_atomic
    from fusion_bench.zero_shot.image_datasets import ImageClassificationDataset

    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    task, train_ds = resolve_task(args)
    fabric = make_fabric(args)
    fabric.seed_everything(args.seed, verbose=False)
    clip, vision, tokenizer, processor = load_models(args, fabric)
    transform = image_transform(processor)

    # The head is computed once by the frozen text tower, which is then dropped: training
    # needs only the head, the visual projection and the logit scale.
    clip = clip.to(fabric.device)
    head = zero_shot_head(clip, tokenizer, task.classnames, task.templates, device=fabric.device)
    del clip.text_model
    del clip.vision_model  # the tower is trained as `vision` (the same module)

    def loader(ds, shuffle: bool) -> DataLoader:
        data = ImageClassificationDataset(ds, task.image_column, task.label_column, transform)
        return DataLoader(
            data,
            batch_size=args.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(args.seed) if shuffle else None,
            num_workers=args.num_workers,
            drop_last=shuffle and len(data) >= args.batch_size,  # equal batches when possible
        )

    result: dict[str, Any] = {}
    eval_loader = None
    if args.eval_split:
        from fusion_bench.utils.data import check_columns, load_dataset_split

        eval_ds = load_dataset_split(
            task.dataset,
            split=args.eval_split,
            subset=task.subset,
            what=f"dataset of task '{task.name}'",
            hint="--eval-split <existing split>",
        )
        columns = [task.image_column, task.label_column]
        check_columns(eval_ds, columns, task=task.name, hint="--image-column/--label-column")
        # Every process evaluates the whole split: a distributed sampler would split (and pad)
        # it, and the accuracy printed by rank 0 would cover only its shard.
        eval_loader = fabric.setup_dataloaders(
            loader(eval_ds, False), use_distributed_sampler=False
        )
        result["accuracy_pretrained"] = accuracy(
            fabric, clip, vision, head, eval_loader, args.eval_limit
        )
        fabric.print(f"pretrained tower: {100 * result['accuracy_pretrained']:.1f}% top-1")

    train_loader = fabric.setup_dataloaders(loader(train_ds, True))
    bar = tqdm(
        total=args.steps,
        desc=f"fine-tuning {task.name}",
        unit="step",
        disable=args.no_progress or not fabric.is_global_zero,
    )

    def log_line(step: int, loss: float, lr: float) -> None:
        if fabric.is_global_zero:  # above the progress bar, without breaking it
            bar.write(f"step {step}/{args.steps}  loss {loss:.4f}  lr {lr:.3g}")

    t = time.perf_counter()
    with bar:
        tuned = finetune_vision(
            clip,
            head,
            endless(train_loader),
            steps=args.steps,
            lr=args.lr,
            layer_decay=args.layer_decay,
            warmup_steps=args.warmup_steps,
            schedule=args.schedule,
            vision_model=vision,
            fabric=fabric,
            progress=bar,
            log_every=args.log_every,
            on_log=log_line,
        )
    train_s = time.perf_counter() - t
    losses = tuned.train_losses
    tuned = tuned.float()  # true half precision (bf16-true) trained it in half: save float32
    if eval_loader is not None:
        result["accuracy_finetuned"] = accuracy(
            fabric, clip, tuned, head, eval_loader, args.eval_limit
        )
        fabric.print(f"fine-tuned tower: {100 * result['accuracy_finetuned']:.1f}% top-1")

    out = Path(args.out).expanduser()
    if fabric.is_global_zero:
        save_pretrained_atomic(tuned.cpu(), out)
        tail = losses[-min(len(losses), 20) :]
        result.update(
            {
                "task": task.name,
                "pretrained": str(args.pretrained),
                "dataset": task.dataset,
                "subset": task.subset,
                "split": args.split,
                "classnames": list(task.classnames),
                "templates": list(task.templates),
                "recipe": {
                    "steps": args.steps,
                    "batch_size": args.batch_size,
                    "lr": args.lr,
                    "optimizer": "Adam",
                    "layer_decay": args.layer_decay,
                    "warmup_steps": args.warmup_steps,
                    "schedule": args.schedule,
                    "seed": args.seed,
                    "precision": args.precision,
                    "devices": args.devices,
                },
                "loss": {"first": losses[0], "last20_mean": sum(tail) / len(tail)},
                "train_seconds": train_s,
                "total_seconds": time.perf_counter() - t0,
            }
        )
        # Provenance beside the weights (the model files above are already complete).
        atomic_write_json(out / "finetune_info.json", result)
        fabric.print(f"saved {out} (use it as modelpool.models.{task.name}={out})")
    fabric.barrier()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fusion_bench.errors import FusionBenchError

    try:
        run(args)
    except FusionBenchError as e:
        print(f"finetune_clip.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
