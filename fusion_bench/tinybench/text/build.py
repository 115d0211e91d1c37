"""Building the tiny text benchmark into a directory (called by ``ensure_built`` under its lock).

Steps: generate the 8 GLUE-style datasets -> word-level T5 tokenizer -> "Flan" pretraining on
all tasks with heuristic labels -> per task a full fine-tuned expert and a LoRA expert on the
true labels -> GPT-2-style tokenizer, causal-LM pretraining of a tiny GPT-2 on the training
texts, one sequence-classification expert per classification task -> validation scores -> save
everything in HF formats -> ``BUILD_INFO.json`` last.
The build goes into a temporary sibling directory that is renamed into place only when
complete.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fusion_bench.tinybench.text import GPT2_TASKS, TASKS, Profile, train
from fusion_bench.tinybench.text import gpt2 as g2
from fusion_bench.tinybench.text import tokenizer as tk
from fusion_bench.tinybench.text.data import SPECS, Example, features, generate
from fusion_bench.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def _pairs(tokenizer, task_name: str, examples: list[Example], *, heuristic: bool):
    from fusion_bench.tasks.glue import GLUE_TASKS, render_input, render_target

    task = GLUE_TASKS[task_name]
    labels = [e.heuristic_label if heuristic else e.row["label"] for e in examples]
    return train.encode(
        tokenizer,
        [render_input(task, e.row) for e in examples],
        [render_target(task, y) for y in labels],
    )


def _save_dataset(path: Path, task: str, splits: dict[str, list[Example]]) -> None:
    import datasets

    feats = features(task)
    dd = datasets.DatasetDict()
    for split, examples in splits.items():
        cols = {c: [e.row[c] for e in examples] for c in feats if c != "idx"}
        cols["idx"] = list(range(len(examples)))
        dd[split] = datasets.Dataset.from_dict(cols, features=feats)
    dd.save_to_disk(str(path))


def _build_gpt2(out: Path, data: dict, params: Profile, seed: int, timings: dict) -> dict:
    """The GPT-2 part: tokenizer, causal-LM pretraining, classifiers; returns its info."""
    from fusion_bench.tasks.glue import GLUE_TASKS

    tokenizer = g2.build_tokenizer()
    gen = torch.Generator().manual_seed(seed + 1)
    model = g2.make_gpt2(params, len(tokenizer), seed)
    docs = [
        ids + [g2.EOT_ID]
        for task in TASKS
        for ids in g2.encode_classification(tokenizer, task, [e.row for e in data[task]["train"]])
    ]
    t = time.perf_counter()
    with tqdm(
        total=params.gpt2_pretrain_steps, desc="tiny text benchmark: GPT-2 pretraining"
    ) as bar:
        losses = g2.pretrain(model, docs, params, gen, bar)
    timings["gpt2_pretrain"] = time.perf_counter() - t
    backbone = model.transformer
    backbone.save_pretrained(out / "gpt2" / "pretrained")
    tokenizer.save_pretrained(out / "gpt2" / "pretrained")

    scores: dict[str, float] = {}
    timings["gpt2_experts"] = {}
    for task in GPT2_TASKS:
        split = GLUE_TASKS[task].validation_split
        train_rows = [e.row for e in data[task]["train"]]
        val_rows = [e.row for e in data[task][split]]
        t = time.perf_counter()
        with tqdm(
            total=params.gpt2_finetune_steps, desc=f"tiny text benchmark: GPT-2 {task}"
        ) as bar:
            expert = g2.finetune(
                backbone,
                len(GLUE_TASKS[task].labels),
                g2.encode_classification(tokenizer, task, train_rows),
                [r["label"] for r in train_rows],
                params,
                gen,
                bar,
            )
        timings["gpt2_experts"][task] = time.perf_counter() - t
        scores[task] = g2.evaluate(
            expert,
            g2.encode_classification(tokenizer, task, val_rows),
            [r["label"] for r in val_rows],
        )
        expert.save_pretrained(out / "gpt2" / "experts" / task)
        tokenizer.save_pretrained(out / "gpt2" / "experts" / task)
        tqdm.write(f"  {task:5s} GPT-2 expert {scores[task]:.3f}")
    return {
        "scores": scores,
        "pretrain_loss": {"first": losses[0], "last": sum(losses[-20:]) / len(losses[-20:])},
        "tokenizer": {
            "type": "PreTrainedTokenizerFast (tokenizers WordLevel, GPT-2 style)",
            "vocab_size": len(tokenizer),
            "eos_token_id": g2.EOT_ID,
            "pad_token_id": None,
            "model_max_length": tokenizer.model_max_length,
        },
    }


def build_files(out: Path, *, profile: str, params: Profile, seed: int) -> dict:
    """Write the build of ``profile`` into ``out`` (everything but ``BUILD_INFO.json``, which
    :meth:`~fusion_bench.tinybench._cache.TinyBenchmark.ensure_built` writes last); return the
    build's information for that file."""
    from fusion_bench.tasks.glue import GLUE_TASKS

    timings: dict = {}
    t0 = time.perf_counter()
    data: dict[str, dict[str, list[Example]]] = {}
    for task in TASKS:
        data[task] = {
            split: generate(task, split, params.n_train if split == "train" else params.n_val, seed)
            for split in SPECS[task].splits
        }
    timings["data"] = time.perf_counter() - t0

    tokenizer = tk.build_tokenizer()
    gen = torch.Generator().manual_seed(seed)
    model = train.make_t5(params, len(tokenizer), seed)
    pools = {t: _pairs(tokenizer, t, data[t]["train"], heuristic=True) for t in TASKS}
    t = time.perf_counter()
    with tqdm(total=params.pretrain_steps, desc="tiny text benchmark: pretraining") as bar:
        losses = train.pretrain(model, pools, params, gen, bar)
    timings["pretrain"] = time.perf_counter() - t
    log.info("pretraining: %.1f s, loss %.3f -> %.3f", timings["pretrain"], losses[0], losses[-1])

    pre_dir = out / "flan-t5" / "pretrained"
    model.save_pretrained(pre_dir)
    tokenizer.save_pretrained(pre_dir)

    def val_rows(task: str) -> list[dict]:
        return [e.row for e in data[task][GLUE_TASKS[task].validation_split]]

    scores: dict[str, dict[str, float]] = {"pretrained": {}, "experts": {}, "lora": {}}
    timings["experts"], timings["lora"] = {}, {}
    t = time.perf_counter()
    for task in TASKS:
        scores["pretrained"][task] = train.evaluate(model, tokenizer, task, val_rows(task))["score"]
    timings["eval_pretrained"] = time.perf_counter() - t

    for task in TASKS:
        pairs = _pairs(tokenizer, task, data[task]["train"], heuristic=False)
        t = time.perf_counter()
        with tqdm(total=params.finetune_steps, desc=f"tiny text benchmark: expert {task}") as bar:
            expert = train.finetune(model, pairs, params, gen, bar)
        timings["experts"][task] = time.perf_counter() - t
        scores["experts"][task] = train.evaluate(expert, tokenizer, task, val_rows(task))["score"]
        expert.save_pretrained(out / "flan-t5" / "experts" / task)
        tokenizer.save_pretrained(out / "flan-t5" / "experts" / task)
        del expert

        t = time.perf_counter()
        with tqdm(total=params.lora_steps, desc=f"tiny text benchmark: LoRA {task}") as bar:
            lora = train.finetune_lora(model, pairs, params, gen, bar)
        timings["lora"][task] = time.perf_counter() - t
        scores["lora"][task] = train.evaluate(lora, tokenizer, task, val_rows(task))["score"]
        lora.save_pretrained(out / "flan-t5" / "lora" / task)
        # record the adapter's base as a location the pools resolve, not this machine's cache
        # path (PEFT reads it only when no base model is given; set after saving, as PEFT's
        # save_pretrained would look for a config file there)
        cfg_path = out / "flan-t5" / "lora" / task / "adapter_config.json"
        adapter = json.loads(cfg_path.read_text(encoding="utf-8"))
        adapter["base_model_name_or_path"] = f"tiny-text://{profile}/flan-t5/pretrained"
        atomic_write_json(cfg_path, adapter)
        del lora
        tqdm.write(
            f"  {task:5s} pretrained {scores['pretrained'][task]:.3f}  "
            f"expert {scores['experts'][task]:.3f}  LoRA {scores['lora'][task]:.3f}"
        )

    gpt2_info = _build_gpt2(out, data, params, seed, timings)
    scores["gpt2_experts"] = gpt2_info.pop("scores")

    t = time.perf_counter()
    import datasets

    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        for task in TASKS:
            _save_dataset(out / "datasets" / task, task, data[task])
    finally:
        if bars_were_on:
            datasets.utils.enable_progress_bars()
    timings["save_datasets"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    import peft
    import transformers

    return {
        "params": asdict(params),
        "tokenizer": {
            "type": "PreTrainedTokenizerFast (tokenizers WordLevel)",
            "vocab_size": len(tokenizer),
            "pad_token_id": tk.PAD_ID,
            "eos_token_id": tk.EOS_ID,
            "unk_token_id": tk.UNK_ID,
            "model_max_length": tk.MAX_LENGTH,
        },
        "tasks": {
            t: {
                "metric": GLUE_TASKS[t].metric,
                "validation_split": GLUE_TASKS[t].validation_split,
                "splits": {s: len(v) for s, v in data[t].items()},
                "kinds": SPECS[t].kinds,
                "hard_kinds": sorted(SPECS[t].hard_kinds),
            }
            for t in TASKS
        },
        "scores": scores,
        "pretrain_loss": {"first": losses[0], "last": sum(losses[-20:]) / len(losses[-20:])},
        "gpt2": gpt2_info,
        "timings_s": timings,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "peft": peft.__version__,
        },
    }
