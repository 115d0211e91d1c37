#!/usr/bin/env python
"""Averages of several grids side by side (one column per grid) as Markdown, e.g. the README's
summary of the tiny text benchmark's three pools.

Usage:
    python scripts/summary_table.py \\
        --column "T5, full experts=multirun/experiment/tiny_flan-t5_glue@score" \\
        --column "GPT-2 (7 tasks)=multirun/experiment/tiny_gpt2_glue@accuracy" \\
        [--readme-block tiny-text-summary]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion_bench.docs import update_readme
from fusion_bench.tables import averages_rows, load_reports, markdown_table


def parse_column(spec: str) -> tuple[str, str, str]:
    """``"NAME=DIR@METRIC"`` -> ``(NAME, DIR, METRIC)`` (METRIC defaults to accuracy)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--column {spec!r}: expected NAME=DIR[@METRIC]")
    path, _, metric = rest.partition("@")
    return name, path, metric or "accuracy"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--column", action="append", required=True, help="NAME=DIR[@METRIC]")
    ap.add_argument("--readme-block", default=None, help="also put the table into this block")
    args = ap.parse_args(argv)
    columns = {}
    for spec in args.column:
        try:
            name, path, metric = parse_column(spec)
        except ValueError as e:
            print(f"summary_table: error: {e}", file=sys.stderr)
            return 1
        reports = load_reports([path])
        if not reports:
            print(f"summary_table: error: no completed report.json under {path}", file=sys.stderr)
            return 1
        columns[name] = (reports, metric)
    text = markdown_table(*averages_rows(columns))
    print(text, end="")
    if args.readme_block:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        update_readme(readme, {args.readme_block: text})
        print(f"updated README.md block '{args.readme_block}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
