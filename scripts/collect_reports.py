#!/usr/bin/env python
"""Collect the report.json files of one or more runs / sweeps into a results table.

Usage:
    python scripts/collect_reports.py multirun/tiny_table -o results/clip-vit-tiny_TA8.md \
        --title "Tiny CLIP benchmark" --command "bash scripts/tiny_table.sh"
    # beside the published numbers, as LaTeX, with PNG plots
    python scripts/collect_reports.py multirun/clip_b32 --reference clip-vit-b32_TA8 \
        -o results/clip-vit-b32_TA8.tex --plots results/plots/clip-vit-b32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fusion_bench.docs import update_readme
from fusion_bench.tables import (
    comparison_rows,
    csv_table,
    latex_table,
    load_reports,
    markdown_table,
    table_rows,
)
from fusion_bench.utils.io import atomic_write_text

_FORMATS = {".md": "md", ".csv": "csv", ".tex": "tex"}
_WHAT = {
    "accuracy": "Top-1 accuracy (%)",
    "score": "Score (%: accuracy, STS-B Spearman x100)",
}


class _Error(Exception):
    """A one-line error for stderr."""


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    # Unknown suffixes stay Markdown, as before --format existed.
    return _FORMATS.get(Path(args.out).suffix, "md") if args.out else "md"


def _table(args: argparse.Namespace, reports: list[dict[str, Any]]):
    """Header, rows and the reference (or None) for the requested table."""
    if not args.reference:
        return (*table_rows(reports, args.metric), None)
    from fusion_bench.reference import load_reference

    try:
        ref = load_reference(args.reference)
        return (*comparison_rows(reports, ref, args.metric), ref)
    except ValueError as e:
        raise _Error(str(e)) from None


def _warn_task_mismatch(reports: list[dict[str, Any]], ref) -> None:
    # Averages over different task sets are not comparable; say so rather than stay silent.
    ours, published = set(reports[0]["metrics"]), set(ref.tasks)
    if ours != published:
        print(
            f"collect_reports: warning: tasks differ from {ref.name} (ours only: "
            f"{sorted(ours - published)}, published only: {sorted(published - ours)}); "
            "the averages and differences are over different task sets",
            file=sys.stderr,
        )


def _markdown(args: argparse.Namespace, header, rows, ref) -> str:
    text = f"# {args.title}\n\n"
    if args.command:
        text += f"Regenerate with:\n\n```bash\n{args.command}\n```\n\n"
    what = _WHAT.get(args.metric, args.metric)
    text += f"{what} per task; time and peak memory as measured on the machine that ran it.\n\n"
    if ref is not None:
        text += (
            f"Published: {ref.description} `Published` is the published average of the same "
            "method and hyperparameters, `Δ` ours minus published; rows marked [published] "
            "have no run here.\n\n"
        )
    return text + markdown_table(header, rows)


def _plots(args: argparse.Namespace, reports: list[dict[str, Any]]) -> list[str]:
    """Write the PNGs; return what was written or skipped, one line each."""
    try:
        from fusion_bench import plots
    except ImportError as e:  # matplotlib missing
        raise _Error(f"--plots needs matplotlib ({e}); pip install 'matplotlib>=3.7'") from None
    out = Path(args.plots)
    done = [f"wrote {plots.plot_per_task(reports, out / 'per_task.png', args.metric)}"]
    param = plots.swept_parameter(reports)
    if param:
        done.append(f"wrote {plots.plot_sweep(reports, out / 'sweep.png', param, args.metric)}")
    else:
        done.append("skipped sweep.png: no numeric hyperparameter override takes two values")
    if plots.params_points(reports, args.metric):
        done.append(f"wrote {plots.plot_params(reports, out / 'params.png', args.metric)}")
    else:
        done.append(
            f"skipped params.png: no report has method_info.{plots.PARAM_COUNT_KEY} "
            "(smile_upscaling and weight_ensembling_moe record it)"
        )
    return done


def run(args: argparse.Namespace) -> int:
    reports = load_reports(args.paths)
    if not reports:
        raise _Error(f"no completed report.json under {args.paths}")
    header, rows, ref = _table(args, reports)
    if ref is not None:
        _warn_task_mismatch(reports, ref)
    fmt = _format(args)
    if fmt == "csv":
        text = csv_table(header, rows)
    elif fmt == "tex":
        text = latex_table(header, rows)
    else:
        text = _markdown(args, header, rows, ref)
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out} ({len(rows)} rows)")
    if args.plots:
        print("\n".join(_plots(args, reports)))
    if args.readme_block:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        update_readme(readme, {args.readme_block: markdown_table(header, rows)})
        print(f"updated README.md block '{args.readme_block}'")
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("paths", nargs="+", help="report.json files or directories holding them")
    ap.add_argument(
        "-o", "--out", help="write here (.md, .csv or .tex picks the format); default: print"
    )
    ap.add_argument("--format", choices=sorted(set(_FORMATS.values())), default=None)
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--command", default=None, help="the command that regenerates the table")
    ap.add_argument(
        "--readme-block", default=None, help="also put the table into this README block"
    )
    ap.add_argument(
        "--reference",
        default=None,
        help="published table to show beside ours, e.g. clip-vit-b32_TA8 (fusion_bench/reference/)",
    )
    ap.add_argument("--plots", default=None, help="write PNG plots into this directory")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (_Error, OSError) as e:  # OSError: an unwritable -o / --plots path
        print(f"collect_reports: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
