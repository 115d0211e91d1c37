#!/usr/bin/env python
"""Collect the report.json files of one or more runs / sweeps into a results table.

Usage:
    python scripts/collect_reports.py multirun/tiny_table -o results/clip-vit-tiny_TA8.md \
        --title "Tiny CLIP benchmark" --command "bash scripts/tiny_table.sh"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion_bench.docs import update_readme
from fusion_bench.tables import csv_table, load_reports, markdown_table, table_rows
from fusion_bench.utils.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("paths", nargs="+", help="report.json files or directories holding them")
    ap.add_argument("-o", "--out", help="write here (.md or .csv); default: print Markdown")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--command", default=None, help="the command that regenerates the table")
    ap.add_argument(
        "--readme-block", default=None, help="also put the table into this README block"
    )
    args = ap.parse_args(argv)

    reports = load_reports(args.paths)
    if not reports:
        print(
            f"collect_reports: error: no completed report.json under {args.paths}", file=sys.stderr
        )
        return 1
    header, rows = table_rows(reports, args.metric)
    if args.out and args.out.endswith(".csv"):
        text = csv_table(header, rows)
    else:
        text = f"# {args.title}\n\n"
        if args.command:
            text += f"Regenerate with:\n\n```bash\n{args.command}\n```\n\n"
        what = {
            "accuracy": "Top-1 accuracy (%)",
            "score": "Score (%: accuracy, STS-B Spearman x100)",
        }.get(args.metric, args.metric)
        text += f"{what} per task; time and peak memory as measured on the machine that ran it.\n\n"
        text += markdown_table(header, rows)
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out} ({len(rows)} rows)")
    if args.readme_block:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        update_readme(readme, {args.readme_block: markdown_table(header, rows)})
        print(f"updated README.md block '{args.readme_block}'")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
