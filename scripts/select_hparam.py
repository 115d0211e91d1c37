#!/usr/bin/env python
"""Choose a hyperparameter from a validation-split sweep, then evaluate it on the test split.

Usage:
    fusion_bench -m experiment=tiny_clip_TA8_tune_task_arithmetic      # the sweep (validation)
    python scripts/select_hparam.py multirun/experiment/tiny_clip_TA8_tune_task_arithmetic \
        --param method.scaling_factor [--metric accuracy] [--run]
    python scripts/select_hparam.py multirun/experiment/tiny_clip_TA8_optuna_ties \
        --param method.scaling_factor --param method.threshold --run

Reads the completed ``report.json`` files under SWEEP_DIR (a basic-sweeper grid or an Optuna
study: one job dir per trial), refuses if any of them was evaluated on a task's test split
(tuning must never read the test data), prints one row per value with its average validation
metric, and picks the best average (``--minimize`` for losses). Ties go to the smaller value
(compared parameter by parameter, in ``--param`` order): a smaller merging coefficient is the
more conservative choice. Without ``--run`` it prints the test command; with ``--run`` it runs
it: the chosen job's own overrides with ``taskpool.split=null`` (each task's test split) into
``SWEEP_DIR-test/``, which resumes like any run and never mixes with the sweep's reports, and
writes ``selection.json`` there (what was chosen, from which split).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_bench.tables import PERCENT_METRICS, load_reports, markdown_table

TUNING_ROLE = "validation"
"""The split role (``taskpool.split``) every report of a tuning sweep must be evaluated on."""


class SelectionError(Exception):
    """A one-line error for stderr (exit code 1)."""


# -- reading reports --------------------------------------------------------------------------
def _overrides(report: dict[str, Any]) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (``+`` / ``~`` prefixes dropped)."""
    out = {}
    for o in report.get("run_info", {}).get("overrides", []):
        key, _, value = o.lstrip("+~").partition("=")
        out[key] = value
    return out


def _where(report: dict[str, Any]) -> str:
    """A short name of a report for messages: its overrides, or its config key."""
    overrides = report.get("run_info", {}).get("overrides")
    return ",".join(overrides) if overrides else report.get("config_key", "?")[:12]


def check_tuning_split(report: dict[str, Any]) -> None:
    """Refuse a report that was not evaluated on every task's validation split.

    The run's ``taskpool.split`` (recorded in its resolved config) is the split role the task
    pool mapped to each task's split; null, ``test`` or a missing key (a task pool without the
    option) mean each task's evaluation split, i.e. test data.

    Raises:
        SelectionError: the report's split role is not ``validation``.
    """
    role = (report.get("config", {}).get("taskpool") or {}).get("split")
    if role != TUNING_ROLE:
        task, meta = next(iter(report.get("task_metadata", {}).items()), ("?", {}))
        raise SelectionError(
            f"report {_where(report)} was evaluated on test data (taskpool.split="
            f"{role if role is not None else 'null'}; task '{task}': split "
            f"'{meta.get('split', '?')}'): tune with taskpool.split=validation"
        )


def param_value(report: dict[str, Any], key: str) -> Any:
    """Value of dotted ``key`` in the report: a config group's choice (``method``), else the
    resolved config entry (``method.scaling_factor`` -> ``config["method"]["scaling_factor"]``).

    Raises:
        SelectionError: the key is neither a group choice nor a config entry.
    """
    choices = report.get("run_info", {}).get("choices", {})
    if key in choices:
        return choices[key]
    node: Any = report.get("config", {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SelectionError(f"report {_where(report)} has no config entry '{key}'")
        node = node[part]
    return node


def varying_keys(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between reports (what the sweep swept), sorted."""
    seen: dict[str, set[str]] = {}
    for r in reports:
        for k, v in _overrides(r).items():
            seen.setdefault(k, set()).add(v)
    keys = {k for k, vs in seen.items() if len(vs) > 1}
    # a key set in some reports only also varies (absent = the default)
    keys |= {k for k in seen if any(k not in _overrides(r) for r in reports)}
    return sorted(keys)


# -- choosing ---------------------------------------------------------------------------------
def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before anything else, numbers by value, the rest by text (``None`` first)."""
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, int | float):
        return (1, float(value))
    return (2, str(value))


def candidates(
    reports: Sequence[dict[str, Any]], params: Sequence[str], metric: str
) -> list[tuple[tuple[Any, ...], float, dict[str, Any]]]:
    """``(values, average metric, report)`` per distinct value of ``params``, sorted by values.

    Reports of the same config (a copied job dir) count once; two different configs with the
    same values mean the sweep also varied something else, which is refused.

    Raises:
        SelectionError: a report lacks ``metric`` or is ambiguous as above.
    """
    by_values: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in reports:
        values = tuple(param_value(r, p) for p in params)
        avg = r.get("average", {}).get(metric)
        if avg is None or not math.isfinite(avg):
            have = ", ".join(sorted(r.get("average", {}))) or "none"
            raise SelectionError(
                f"report {_where(r)} has no average '{metric}' (it has: {have}); pass --metric"
            )
        other = by_values.get(values)
        if other is not None and other.get("config_key") != r.get("config_key"):
            raise SelectionError(
                f"two runs with {dict(zip(params, values, strict=True))} differ in other settings "
                f"({_where(other)} | {_where(r)}); add the other swept key with --param"
            )
        by_values[values] = r
    rows = [(v, float(r["average"][metric]), r) for v, r in by_values.items()]
    return sorted(rows, key=lambda row: tuple(_sort_key(x) for x in row[0]))


def choose(
    rows: Sequence[tuple[tuple[Any, ...], float, dict[str, Any]]], minimize: bool = False
) -> int:
    """Index of the best row: highest average (lowest with ``minimize``); ties go to the row
    with the smaller values, which comes first because ``rows`` are sorted by values."""
    if not rows:
        raise SelectionError("nothing to choose from")
    sign = 1.0 if minimize else -1.0
    return min(range(len(rows)), key=lambda i: (sign * rows[i][1], i))


# -- the test run -----------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A Hydra override value holding any path (``=`` and ``,`` would be grammar otherwise)."""
    if "'" in value or "\\" in value:
        raise SelectionError(f"cannot pass the path {value!r} to Hydra: rename it without ' or \\")
    return f"'{value}'"


def final_overrides(report: dict[str, Any], run_dir: str | Path) -> list[str]:
    """The chosen job's own overrides, evaluated on each task's test split in ``run_dir``.

    ``taskpool.split=null`` is explicit because a tuning experiment sets ``validation`` in its
    config, not on the command line.
    """
    kept = [
        o
        for o in report.get("run_info", {}).get("overrides", [])
        if o.lstrip("+~").partition("=")[0] not in ("taskpool.split", "hydra.run.dir")
    ]
    return [*kept, "taskpool.split=null", f"hydra.run.dir={_quote(str(run_dir))}"]


def _shell(arg: str) -> str:
    """``arg`` for a copy-pasted shell command: bare if safe, else double-quoted when that
    keeps it literal (Hydra's single quotes stay readable), else ``shlex.quote``."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _table(
    rows: Sequence[tuple[tuple[Any, ...], float, dict[str, Any]]],
    params: Sequence[str],
    metric: str,
    best: int,
) -> str:
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    header = [*params, f"avg validation {metric}" + (" (%)" if scale != 1.0 else ""), "chosen"]
    body = [
        [*(str(v) for v in values), f"{scale * avg:.2f}", "*" if i == best else ""]
        for i, (values, avg, _) in enumerate(rows)
    ]
    return markdown_table(header, body)


def _optuna_best(sweep_dir: Path) -> str | None:
    """Optuna's own ``best_params`` line, when SWEEP_DIR is an Optuna study."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return None
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return f"optuna best_params: {data.get('best_params')} (value {data.get('best_value')})"


def run(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise SelectionError(f"{sweep_dir} is not a directory: pass the sweep's hydra.sweep.dir")
    reports = load_reports([sweep_dir])
    if not reports:
        raise SelectionError(f"no completed report.json under {sweep_dir}: run the sweep first")
    for r in reports:
        check_tuning_split(r)
    params = args.param or varying_keys(reports)
    if not params:
        raise SelectionError("the reports do not differ in any override: name it with --param")
    rows = candidates(reports, params, args.metric)
    best = choose(rows, args.minimize)
    values, avg, chosen = rows[best]
    print(_table(rows, params, args.metric, best))
    optuna = _optuna_best(sweep_dir)
    if optuna:
        print(optuna)
    choice = dict(zip(params, values, strict=True))
    print(f"chosen ({len(rows)} candidates, by average validation {args.metric}): {choice}")

    run_dir = Path(f"{sweep_dir.resolve()}-test")
    overrides = final_overrides(chosen, run_dir)
    print("test run: fusion_bench " + " ".join(_shell(o) for o in overrides))
    if not args.run:
        return 0
    from fusion_bench.utils.io import atomic_write_json

    cmd = [sys.executable, "-m", "fusion_bench.cli", *overrides]
    code = subprocess.run(cmd, check=False).returncode
    if code != 0:
        raise SelectionError(f"the test run exited with status {code} (output above)")
    atomic_write_json(
        run_dir / "selection.json",
        {
            "sweep_dir": str(sweep_dir.resolve()),
            "params": choice,
            "metric": args.metric,
            "minimize": args.minimize,
            "validation_average": avg,
            "candidates": [
                {"params": dict(zip(params, v, strict=True)), "validation_average": a}
                for v, a, _ in rows
            ],
            # every report was checked by check_tuning_split before choosing
            "tuned_on": f"taskpool.split={TUNING_ROLE}",
            "test_data_used_for_tuning": False,
        },
    )
    print(f"test report: {run_dir / 'report.json'}; selection: {run_dir / 'selection.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("sweep_dir", help="the sweep's hydra.sweep.dir (basic sweeper or Optuna)")
    ap.add_argument(
        "--param",
        action="append",
        default=None,
        help="swept key, e.g. method.scaling_factor (repeat for several); "
        "default: the overrides that differ between the reports",
    )
    ap.add_argument("--metric", default="accuracy", help="average metric to optimise")
    ap.add_argument("--minimize", action="store_true", help="lower is better (e.g. loss)")
    ap.add_argument("--run", action="store_true", help="run the chosen value on the test split")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (SelectionError, OSError, json.JSONDecodeError) as e:
        print(f"select_hparam: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
