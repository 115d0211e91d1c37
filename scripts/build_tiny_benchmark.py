#!/usr/bin/env python
"""Build the offline tiny 8-task CLIP benchmark and print its root and accuracy table.

    python scripts/build_tiny_benchmark.py [--profile default|smoke] [--seed 0] [--force]
                                           [--check-merging]

The build lands in ``$FUSION_BENCH_CACHE/tiny_clip/...`` (see ``fusion_bench.constants``) and
is reused by every ``tiny://<profile>/...`` location in the configs. ``--check-merging`` also
loads the build from disk and reports task arithmetic (λ=0.3) and simple averaging, to verify
that merged models land between the pretrained model and the experts.
"""

from __future__ import annotations

import argparse
import json
import logging
import time


def main(argv: list[str] | None = None) -> None:
    from fusion_bench.tinybench import PROFILES, TASKS, ensure_built

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--check-merging",
        action="store_true",
        help="also evaluate task arithmetic (λ=0.3) and simple averaging from disk",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    t = time.perf_counter()
    root = ensure_built(args.profile, seed=args.seed, force=args.force)
    elapsed = time.perf_counter() - t
    info = json.loads((root / "BUILD_INFO.json").read_text())
    print(f"root: {root}")
    print(f"build time: {info['timings_s']['total']:.1f} s (this call: {elapsed:.1f} s)")
    acc = info["accuracy"]
    print(f"{'task':10s} {'pretrained':>10s} {'expert':>8s}")
    for task in TASKS:
        print(f"{task:10s} {100 * acc['pretrained'][task]:10.1f} {100 * acc['experts'][task]:8.1f}")
    mean = {k: sum(v.values()) / len(v) for k, v in acc.items()}
    print(f"{'average':10s} {100 * mean['pretrained']:10.1f} {100 * mean['experts']:8.1f}")
    if args.check_merging:
        from fusion_bench.tinybench.check import check_build, format_table

        print(format_table(check_build(root)))


if __name__ == "__main__":
    main()
