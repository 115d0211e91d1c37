#!/usr/bin/env python
"""L-LoRA vs LoRA under task arithmetic on the offline tiny text benchmark.

    python scripts/llora_vs_lora.py [--profile default] [--steps N] [--batch-size N] [--lr X]
        [--rank R] [--alpha A] [--seed 0] [--threads 1]
        [--out results/flan-t5-tiny_l-lora_vs_lora.md]

Budget defaults (steps, batch size, lr, rank, alpha): the build's own LoRA-expert recipe
(``BUILD_INFO.json`` params, else ``fusion_bench.tinybench.text.PROFILES``).

Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial Linearization",
arXiv 2310.04742. For every task of the tiny Flan-T5 GLUE benchmark (built on first use by
``fusion_bench.tinybench.text.ensure_built``) a LoRA expert and an L-LoRA expert (the LoRA
model linearised around its initial adapter ``phi_0``) are fine-tuned from the same
``phi_0`` (one seed for all tasks and both families) with the same budget (steps, batch size,
learning rate). Each family is merged by task arithmetic ``phi_0 + lambda sum_i tau_i``
(LoRA: on the dense merged weights ``W + (alpha / r) B A``, which is the same pool path as the
published LoRA experts; L-LoRA: on ``phi``, evaluated linearised) for every ``--lambdas`` value
and ``lambda = 1/8`` (simple averaging), and every model is scored by the GLUE text-to-text task
pool of ``config/taskpool/flan-t5-tiny_glue_text_generation.yaml``. The Markdown report gives
per-task scores and the normalised score of the paper, ``score(merged, task) / score(expert of
the same family, task)``.

The experts are saved under ``--work-dir`` (LoRA: PEFT adapters, ``peft_experts: true``;
L-LoRA: adapters + ``adapter_init.safetensors``, ``peft_experts: linearized``), so they can
also be merged through the CLI with ``modelpool.models.<task>=<dir>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAMILIES = {"lora": "LoRA", "llora": "L-LoRA"}
MEAN = "1/N"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="default", help="tiny text benchmark profile")
    p.add_argument(
        "--root",
        default=None,
        help="use this benchmark root (flan-t5/pretrained, datasets/<task>) instead of building",
    )
    p.add_argument("--tasks", nargs="+", default=None, help="default: all 8 GLUE tasks")
    # Budget defaults: the build's LoRA-expert recipe (lora_steps, batch_size, lora_lr, ...).
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps per expert")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (both families)")
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="phi_0 and data order (all experts)")
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (tiny models gain little from more; oversubscribed cores "
        "slow them down a lot)",
    )
    p.add_argument("--limit-batches", type=int, default=None, help="evaluation smoke runs")
    p.add_argument("--work-dir", default=None, help="where experts are saved")
    p.add_argument("--out", default=str(REPO / "results" / "flan-t5-tiny_l-lora_vs_lora.md"))
    return p.parse_args(argv)


def fill_budget(args: argparse.Namespace, root: Path) -> str:
    """Fill the unset budget arguments from the build's LoRA-expert recipe (``BUILD_INFO.json``
    params, else the profile in ``fusion_bench.tinybench.text.PROFILES``); returns the source."""
    keys = {
        "steps": "lora_steps",
        "batch_size": "batch_size",
        "lr": "lora_lr",
        "rank": "lora_r",
        "alpha": "lora_alpha",
    }
    params, source = {}, "defaults"
    info = root / "BUILD_INFO.json"
    if info.exists():
        params = json.loads(info.read_text(encoding="utf-8")).get("params", {})
        source = "the build's LoRA recipe (BUILD_INFO.json)"
    if not all(k in params for k in keys.values()):
        from dataclasses import asdict

        from fusion_bench.tinybench.text import PROFILES

        if args.profile in PROFILES:
            params, source = asdict(PROFILES[args.profile]), f"profile '{args.profile}'"
    fallback = {"lora_steps": 200, "batch_size": 32, "lora_lr": 5e-3, "lora_r": 8, "lora_alpha": 16}
    for arg, key in keys.items():
        if getattr(args, arg) is None:
            setattr(args, arg, params.get(key, fallback[key]))
    return source


def compose_taskpool(profile: str, root: Path, limit_batches: int | None):
    """The benchmark's GLUE text task pool config with its ``tiny-text://`` locations pointed at
    ``root`` (composed with Hydra exactly as the CLI does)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from fusion_bench.constants import config_dir
    from fusion_bench.utils.instantiate import instantiate

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose(
            "fusion_bench",
            overrides=["taskpool=flan-t5-tiny_glue_text_generation", f"tiny_profile={profile}"],
        )
    node = OmegaConf.to_container(cfg.taskpool, resolve=True)
    prefix = f"tiny-text://{profile}/"

    def local(location: str) -> str:
        return str(root / location[len(prefix) :]) if location.startswith(prefix) else location

    node["tokenizer"] = local(node["tokenizer"])
    for task in node["tasks"].values():
        task["dataset"] = local(task["dataset"])
    node["limit_batches"] = limit_batches
    return instantiate(node, "taskpool 'flan-t5-tiny_glue_text_generation'"), node


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def fmt(x: float | None, scale: float = 100.0) -> str:
    return "–" if x is None else f"{scale * x:.1f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from fusion_bench.constants import PRETRAINED, cache_dir
    from fusion_bench.finetune.lora import finetune_lora, save_finetuned
    from fusion_bench.method.task_arithmetic import TaskArithmetic
    from fusion_bench.modelpool.seq2seq_lm import Seq2SeqLMPool
    from fusion_bench.tasks.glue_data import load_text_split

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.root is not None:
        root = Path(args.root)
    else:
        from fusion_bench.tinybench.text import ensure_built

        root = ensure_built(args.profile)
    budget_source = fill_budget(args, root)
    pretrained = root / "flan-t5" / "pretrained"
    work = Path(args.work_dir or cache_dir() / "llora_vs_lora" / f"{args.profile}-seed{args.seed}")
    taskpool, taskpool_cfg = compose_taskpool(args.profile, root, args.limit_batches)
    tasks = args.tasks or list(taskpool.tasks)
    unknown = [t for t in tasks if t not in taskpool.tasks]
    if unknown:
        sys.exit(f"unknown task(s) {unknown}; tasks: {list(taskpool.tasks)}")
    taskpool.tasks = {t: taskpool.tasks[t] for t in tasks}
    tokenizer = AutoTokenizer.from_pretrained(pretrained)

    # -- fine-tuning ---------------------------------------------------------------------------
    hp = dict(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        alpha=args.alpha,
        seed=args.seed,
        max_input_length=taskpool.max_input_length,
        progress=False,  # one line per expert below
    )
    train_time: dict[str, dict[str, float]] = {f: {} for f in FAMILIES}
    final_loss: dict[str, dict[str, float]] = {f: {} for f in FAMILIES}
    for task in tasks:
        cfg = taskpool.tasks[task]
        train = load_text_split(cfg, cfg.train_split, "taskpool")
        for family in FAMILIES:
            model = AutoModelForSeq2SeqLM.from_pretrained(pretrained)
            t0 = time.perf_counter()
            expert = finetune_lora(
                model,
                tokenizer,
                train,
                task_cfg=cfg,
                linearized=family == "llora",
                cache_dir=taskpool.cache_dir,
                **hp,
            )
            train_time[family][task] = time.perf_counter() - t0
            final_loss[family][task] = mean(expert.train_losses[-10:])
            save_finetuned(expert, work / family / task)
            print(
                f"{FAMILIES[family]:7s} {task:5s} {train_time[family][task]:6.1f} s  "
                f"loss {expert.train_losses[0]:.3f} -> {final_loss[family][task]:.3f}",
                flush=True,
            )

    # -- evaluation ----------------------------------------------------------------------------
    pools = {
        "lora": Seq2SeqLMPool(
            {PRETRAINED: str(pretrained), **{t: str(work / "lora" / t) for t in tasks}},
            peft_experts=True,
        ),
        "llora": Seq2SeqLMPool(
            {PRETRAINED: str(pretrained), **{t: str(work / "llora" / t) for t in tasks}},
            peft_experts="linearized",
        ),
    }
    eval_time: dict[str, float] = {}

    def evaluate(model, label: str) -> dict[str, float]:
        t0 = time.perf_counter()
        res = taskpool.evaluate(model)
        eval_time[label] = time.perf_counter() - t0
        print(f"{label:24s} " + " ".join(f"{t}={100 * res[t]['score']:.1f}" for t in tasks))
        return {t: res[t]["score"] for t in tasks}

    scores: dict[str, dict[str, float]] = {}
    scores["pretrained"] = evaluate(
        AutoModelForSeq2SeqLM.from_pretrained(pretrained).eval(), "pretrained"
    )
    settings = [*args.lambdas, MEAN]
    for family, pool in pools.items():
        pool.validate()
        experts = {t: pool.load_model(t) for t in tasks}  # each scored on its own task
        scores[f"{family}/individual"] = evaluate(experts, f"{FAMILIES[family]} individual")
        del experts
        for lam in settings:
            merged = TaskArithmetic(scaling_factor=lam).run(pool)
            scores[f"{family}/{lam}"] = evaluate(merged, f"{FAMILIES[family]} TA λ={lam}")
            del merged
    total = time.perf_counter() - t_start

    # -- report --------------------------------------------------------------------------------
    def normalised(family: str, setting) -> dict[str, float | None]:
        ind = scores[f"{family}/individual"]
        merged = scores[f"{family}/{setting}"]
        return {t: (merged[t] / ind[t] if ind[t] > 0 else None) for t in tasks}

    def avg(row: dict[str, float | None]) -> float | None:
        """Mean over the tasks where the value is defined (normalised: individual score > 0)."""
        vals = [v for v in row.values() if v is not None]
        return mean(vals) if vals else None

    def label(setting) -> str:
        return f"simple average (λ = 1/{len(tasks)})" if setting == MEAN else f"TA λ = {setting}"

    build_note = ""
    info_file = root / "BUILD_INFO.json"
    if info_file.exists():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        build_lora = info.get("scores", {}).get("lora", {})
        build_note = f" (build version {info.get('version')}, seed {info.get('seed')})"
        if all(t in build_lora for t in tasks):
            build_note += (
                f"; the build's own LoRA experts (its recipe: AdamW, warm-up + cosine) average "
                f"{fmt(mean(build_lora[t] for t in tasks))}"
            )

    command = "python scripts/llora_vs_lora.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if os.environ.get("FUSION_BENCH_CACHE"):  # where the benchmark and the experts live
        command = f"FUSION_BENCH_CACHE={shlex.quote(os.environ['FUSION_BENCH_CACHE'])} {command}"
    header = "| model | " + " | ".join(tasks) + " | avg |\n|---|" + "---:|" * (len(tasks) + 1)
    lines = [
        "# L-LoRA vs LoRA under task arithmetic — tiny Flan-T5 GLUE benchmark",
        "",
        "Generated by `scripts/llora_vs_lora.py`; do not edit. Command:",
        "",
        f"    {command.strip()}",
        "",
        'Method: Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial '
        'Linearization", arXiv 2310.04742. Per task, one LoRA and one L-LoRA expert are '
        "fine-tuned from the same adapter initialisation φ0 (shared by all tasks: one seed) with "
        "the same budget; each family is merged by task arithmetic φ0 + λ Σ τ_i (LoRA through the "
        "dense merged weights W + (α/r)BA, L-LoRA on φ and evaluated linearised, greedy decoding "
        "without KV cache). Scores: GLUE text-to-text task pool (exact match; STS-B: Spearman ρ) "
        "on each task's validation split, ×100.",
        "",
        "## Setup",
        "",
        f"- benchmark: tiny text profile `{args.profile}` at `{root}`{build_note}",
        f"- fine-tuning (both families): {args.steps} steps, batch {args.batch_size}, Adam lr "
        f"{args.lr} (constant), grad-norm clip 1.0, LoRA r={args.rank}, α={args.alpha:g} on "
        f"T5 `q`/`v`, PEFT init (A random, B = 0), seed {args.seed}, max input length "
        f"{taskpool.max_input_length}; unset budget arguments taken from {budget_source}",
        f"- evaluation: batch {taskpool.batch_size}, max_new_tokens {taskpool.max_new_tokens}"
        + (f", limit_batches {args.limit_batches}" if args.limit_batches else ""),
        f"- machine: {platform.machine()}, torch threads {args.threads}; total wall time "
        f"{total / 60:.1f} min",
        "",
        "## Fine-tuning cost (wall time per expert, s)",
        "",
        "| family | " + " | ".join(tasks) + " | mean |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    for family, name in FAMILIES.items():
        row = train_time[family]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{row[t]:.1f}" for t in tasks)
            + f" | {mean(row.values()):.1f} |"
        )
    ratio = mean(train_time["llora"].values()) / mean(train_time["lora"].values())
    lines += [
        "",
        f"L-LoRA / LoRA fine-tuning time: {ratio:.2f}× (one `torch.func.jvp` forward + its "
        "backward per step).",
        "",
        "Final training loss (mean of the last 10 steps): "
        + ", ".join(f"{FAMILIES[f]} {mean(final_loss[f].values()):.3f}" for f in FAMILIES)
        + ".",
        "",
        "## Scores",
        "",
        header,
    ]

    def score_row(name: str, row: dict[str, float]) -> str:
        return f"| {name} | " + " | ".join(fmt(row[t]) for t in tasks) + f" | {fmt(avg(row))} |"

    lines.append(score_row("pretrained (φ0)", scores["pretrained"]))
    for family, name in FAMILIES.items():
        lines.append(score_row(f"{name} individual experts", scores[f"{family}/individual"]))
    for setting in settings:
        for family, name in FAMILIES.items():
            lines.append(score_row(f"{name} {label(setting)}", scores[f"{family}/{setting}"]))
    undefined = {
        f"{FAMILIES[f]} {t}" for f in FAMILIES for t in tasks if scores[f"{f}/individual"][t] <= 0
    }
    lines += [
        "",
        "## Normalised scores (merged / individual expert of the same family, ×100)",
        "",
        *(
            [
                f"Undefined (individual score ≤ 0, left out of the average): "
                f"{', '.join(sorted(undefined))}.",
                "",
            ]
            if undefined
            else []
        ),
        header,
    ]
    norm_avg: dict[str, dict] = {f: {} for f in FAMILIES}
    for setting in settings:
        for family, name in FAMILIES.items():
            row = normalised(family, setting)
            norm_avg[family][setting] = avg(row)
            lines.append(
                f"| {name} {label(setting)} | "
                + " | ".join(fmt(row[t]) for t in tasks)
                + f" | {fmt(norm_avg[family][setting])} |"
            )
    lines += ["", "## Summary", ""]
    abs_avg = {f: {s: avg(scores[f"{f}/{s}"]) for s in settings} for f in FAMILIES}
    best = {f: max(settings, key=lambda s, f=f: abs_avg[f][s]) for f in FAMILIES}
    for family, name in FAMILIES.items():
        ind = avg(scores[f"{family}/individual"])
        s = best[family]
        lines.append(
            f"- {name}: individual experts {fmt(ind)}; best merge {label(s)}: "
            f"{fmt(abs_avg[family][s])} absolute, {fmt(norm_avg[family][s])} normalised."
        )
    comparable = [s for s in settings if None not in (norm_avg["lora"][s], norm_avg["llora"][s])]
    wins = [s for s in comparable if norm_avg["llora"][s] > norm_avg["lora"][s]]
    lines.append(
        f"- Normalised score higher for L-LoRA than for LoRA at {len(wins)} of "
        f"{len(comparable)} merge settings"
        + (f" ({', '.join(label(s) for s in wins)})." if wins else ".")
    )
    best_norm = {f: norm_avg[f][best[f]] for f in FAMILIES}
    if None in best_norm.values():
        verdict = "The normalised score is undefined (no individual expert scores > 0)."
    else:
        margin = 100 * (best_norm["llora"] - best_norm["lora"])
        at_best = (
            f"at each family's best λ (by average score) the normalised score is "
            f"{fmt(best_norm['llora'])} for L-LoRA and {fmt(best_norm['lora'])} for LoRA"
        )
        if margin <= 0:
            verdict = (
                f"**L-LoRA does not lose less than LoRA here**: {at_best}, unlike the paper's "
                "finding on Flan-T5-base."
            )
        elif margin < 2.0:
            verdict = (
                f"L-LoRA loses slightly less than LoRA: {at_best} ({margin:.1f} points, one "
                "seed: within what a different seed or λ grid could change; not conclusive)."
            )
        else:
            verdict = (
                f"L-LoRA loses less to merging than LoRA, as the paper reports: {at_best} "
                f"({margin:.1f} points)."
            )
    below = [
        f"{FAMILIES[f]} {t}"
        for f in FAMILIES
        for t in tasks
        if scores[f"{f}/individual"][t] < scores["pretrained"][t]
    ]
    lines += [f"- {verdict}", ""]
    lines += [
        "Notes:",
        "",
        "- With PEFT's initialisation B0 = 0 the Jacobian of the model with respect to A vanishes "
        "at φ0 (ΔW = (α/r) B A), so L-LoRA moves only B; A keeps its initial value.",
        "- The linearisation here is of the whole network with respect to φ, "
        "f(φ0) + J f(φ0) (φ − φ0), as the paper writes it. The authors' code "
        "(github.com/tanganke/peta, `LinearizedModelWraper` around each LoRA layer) linearises "
        "every LoRA layer separately, which keeps the network non-linear in the layer outputs.",
        "- λ is chosen on the evaluation split itself (as in the task-arithmetic literature's "
        "tables); a tiny, procedural benchmark, one seed.",
    ]
    if below:
        lines.append(
            "- Individual experts below the pretrained model on their own task (their normalised "
            "scores exceed 100 and inflate the average): " + ", ".join(below) + "."
        )
    from fusion_bench.utils.io import atomic_write_text

    out = Path(args.out)
    atomic_write_text(out, "\n".join(lines) + "\n")
    atomic_write_text(
        out.with_suffix(".json"),
        json.dumps(
            {
                "command": command.strip(),
                "args": vars(args),
                "taskpool": taskpool_cfg,
                "train_time_s": train_time,
                "final_loss": final_loss,
                "eval_time_s": eval_time,
                "scores": scores,
                "total_s": total,
            },
            indent=2,
            default=str,
        ),
    )
    print(f"wrote {out} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
