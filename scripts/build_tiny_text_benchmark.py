#!/usr/bin/env python
"""Build the offline tiny GLUE text benchmark (tiny Flan-T5 and GPT-2 + experts) and print its scores.

    python scripts/build_tiny_text_benchmark.py [--profile default|smoke] [--seed 0] [--force]

The build lands in ``$FUSION_BENCH_CACHE/tiny_text/...`` (see ``fusion_bench.constants``).
The table shows the validation score (accuracy; STS-B: Spearman's rho) of the pretrained model,
each full fine-tuned expert and each LoRA expert on its own task, and of each GPT-2
classification expert (accuracy; no STS-B expert), as measured by the builder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time


def format_scores(info: dict) -> str:
    """The per-task score table of a ``BUILD_INFO.json`` dict, with the average last."""
    from fusion_bench.tinybench.text import TASKS

    scores = info["scores"]
    cols = ("pretrained", "experts", "lora")
    gpt2 = scores.get("gpt2_experts", {})
    header = "".join(f"{c:>11s}" for c in cols) + f"{'gpt2':>11s}"
    lines = [f"{'task':8s} {'metric':9s}" + header]
    for task in TASKS:
        metric = info["tasks"][task]["metric"]
        g = f"{100 * gpt2[task]:11.1f}" if task in gpt2 else f"{'-':>11s}"
        lines.append(
            f"{task:8s} {metric:9s}" + "".join(f"{100 * scores[c][task]:11.1f}" for c in cols) + g
        )
    mean = {c: sum(scores[c][t] for t in TASKS) / len(TASKS) for c in cols}
    g = f"{100 * sum(gpt2.values()) / len(gpt2):11.1f}" if gpt2 else f"{'-':>11s}"
    lines.append(f"{'average':18s}" + "".join(f"{100 * mean[c]:11.1f}" for c in cols) + g)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from fusion_bench.tinybench.text import PROFILES, ensure_built

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    t = time.perf_counter()
    root = ensure_built(args.profile, seed=args.seed, force=args.force)
    elapsed = time.perf_counter() - t
    info = json.loads((root / "BUILD_INFO.json").read_text())
    print(f"root: {root}")
    print(f"build time: {info['timings_s']['total']:.1f} s (this call: {elapsed:.1f} s)")
    print(format_scores(info))


if __name__ == "__main__":
    main()
