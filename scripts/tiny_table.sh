#!/usr/bin/env bash
# Regenerate results/clip-vit-tiny_TA8.md (and the README's copy): every method in config/method/
# with its published defaults on the offline tiny CLIP benchmark, as one Hydra multirun,
# collected from the report.json files (about 40 minutes on 2 CPU cores, most of it in the
# test-time-trained methods). Optional argument: the sweep dir (default multirun/tiny_table).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-multirun/tiny_table}"
rm -rf "$out"
methods=$(find config/method -name '*.yaml' -printf '%f\n' | sed 's/\.yaml$//' | sort | paste -sd, -)
fusion_bench -m "method=$methods" hydra.sweep.dir="$out"
python scripts/collect_reports.py "$out" -o results/clip-vit-tiny_TA8.md \
  --title "Offline tiny CLIP benchmark, 8 tasks (modelpool=clip-vit-tiny, taskpool=clip-vit-tiny_TA8)" \
  --command "bash scripts/tiny_table.sh" --readme-block tiny-results
