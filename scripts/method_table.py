#!/usr/bin/env python
"""Regenerate README.md's method table from config/method/ (``--check``: only verify)."""

import argparse
import sys
from pathlib import Path

from fusion_bench.docs import method_table, update_readme

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--check", action="store_true", help="exit 1 if the README table is stale")
args = ap.parse_args()
readme = Path(__file__).resolve().parent.parent / "README.md"
stale = update_readme(readme, {"method-table": method_table()}, check=args.check)
if args.check and stale:
    print("README.md method table is stale: run python scripts/method_table.py", file=sys.stderr)
    sys.exit(1)
print("README.md method table " + ("updated" if stale else "is current"))
