"""Building the tiny benchmark into a directory (called by :func:`ensure_built` under its lock).

Steps: generate the 8 tasks' images -> tokenizer + image processor -> contrastive pretraining
-> one fine-tuned vision tower per task -> zero-shot accuracies -> save everything in HF
formats -> ``BUILD_INFO.json`` last. The build goes into a temporary sibling directory that is
renamed into place only when complete.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fusion_bench.tinybench import IMAGE_SIZE, TASKS, Profile, train
from fusion_bench.tinybench import tokenizer as tk
from fusion_bench.tinybench.data import generate

log = logging.getLogger(__name__)


def _task_defs() -> dict[str, tuple[list[str], list[str]]]:
    from fusion_bench.tasks.clip_classification.tiny import TINY_TASKS

    assert tuple(TINY_TASKS) == TASKS, "TINY_TASKS and tinybench.TASKS disagree"
    return TINY_TASKS


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=train.CLIP_MEAN,
        image_std=train.CLIP_STD,
    )


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _save_dataset(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]):
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))}
    )
    dd = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "image": [{"bytes": _png(im), "path": None} for im in images],
                    "label": labels.tolist(),
                },
                features=features,
            )
            for split, (images, labels) in splits.items()
        }
    )
    dd.save_to_disk(str(path))


def build_files(out: Path, *, profile: str, params: Profile, seed: int) -> dict:
    """Write the build of ``profile`` into ``out`` (everything but ``BUILD_INFO.json``, which
    :meth:`~fusion_bench.tinybench._cache.TinyBenchmark.ensure_built` writes last); return the
    build's information for that file."""
    defs = _task_defs()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    data: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    sizes = {"train": params.n_train, "validation": params.n_val, "test": params.n_test}
    for task in tqdm(TASKS, desc="tiny benchmark: generating images", leave=False):
        data[task] = {s: generate(task, s, n, seed) for s, n in sizes.items() if n > 0}
    timings["data"] = time.perf_counter() - t0

    tokenizer = tk.build_tokenizer()
    model = train.make_clip(params, len(tokenizer), IMAGE_SIZE, seed)
    pixels, classes, prompts, task_of_class = [], [], [], []
    for i, task in enumerate(TASKS):
        names, templates = defs[task]
        images, labels = data[task]["train"]
        pixels.append(train.to_pixels(images))
        classes.append(torch.from_numpy(labels) + len(prompts))
        prompts += [[t.format(c) for t in templates] for c in names]
        task_of_class += [i] * len(names)
    allnames = [c for task in TASKS for c in defs[task][0]]
    gen = torch.Generator().manual_seed(seed)
    caption_of_class = train.confused_captions(
        np.asarray(task_of_class), params.confused_fraction, np.random.default_rng(seed)
    )
    t = time.perf_counter()
    with tqdm(total=params.pretrain_steps, desc="tiny benchmark: pretraining CLIP") as bar:
        losses = train.pretrain(
            model,
            tokenizer,
            torch.cat(pixels),
            torch.cat(classes),
            prompts,
            torch.tensor(task_of_class),
            params,
            gen,
            bar,
            caption_of_class=torch.from_numpy(caption_of_class),
        )
    del pixels
    timings["pretrain"] = time.perf_counter() - t

    from fusion_bench.models.clip_zero_shot import zero_shot_head

    acc_pre, acc_expert, timings["experts"] = {}, {}, {}
    for task in TASKS:
        head = zero_shot_head(model, tokenizer, *defs[task])
        test = train.to_pixels(data[task]["test"][0]), torch.from_numpy(data[task]["test"][1])
        acc_pre[task] = train.accuracy(model, model.vision_model, head, *test)
        t = time.perf_counter()
        images, labels = data[task]["train"]
        with tqdm(total=params.finetune_steps, desc=f"tiny benchmark: expert {task}") as bar:
            expert = train.finetune(
                model, head, train.to_pixels(images), torch.from_numpy(labels), params, gen, bar
            )
        timings["experts"][task] = time.perf_counter() - t
        acc_expert[task] = train.accuracy(model, expert, head, *test)
        expert.save_pretrained(out / "experts" / task)
        tqdm.write(
            f"  {task:9s} pretrained {100 * acc_pre[task]:5.1f}%  expert {100 * acc_expert[task]:5.1f}%"
        )

    t = time.perf_counter()
    model.save_pretrained(out / "pretrained")
    tokenizer.save_pretrained(out / "pretrained")
    _image_processor().save_pretrained(out / "pretrained")
    import datasets

    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        for task in TASKS:
            _save_dataset(out / "datasets" / task, data[task], defs[task][0])
    finally:
        if bars_were_on:
            datasets.utils.enable_progress_bars()
    timings["save"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    import transformers

    return {
        "params": asdict(params),
        "image_size": IMAGE_SIZE,
        "tasks": {t: {"classnames": defs[t][0], "templates": defs[t][1]} for t in TASKS},
        "tokenizer": {
            "type": "PreTrainedTokenizerFast (tokenizers WordLevel)",
            "vocab_size": len(tokenizer),
            "pad_token_id": tk.PAD_ID,
            "bos_token_id": tk.BOS_ID,
            "eos_token_id": tk.EOS_ID,
        },
        "confused_classes": [
            f"{allnames[c]} -> {allnames[m]}" for c, m in enumerate(caption_of_class) if c != m
        ],
        "accuracy": {"pretrained": acc_pre, "experts": acc_expert},
        "pretrain_loss": {"first": losses[0], "last": float(np.mean(losses[-20:]))},
        "timings_s": timings,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
        },
    }
