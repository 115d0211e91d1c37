#!/usr/bin/env bash
# Regenerate results/clip-vit-tiny_TA8.{md,csv,tex} (and the README's copy, and the plots in
# results/plots/clip-vit-tiny_TA8/): every implemented method with its published defaults on the
# offline tiny CLIP benchmark, as the grid config/experiment/tiny_clip_TA8.yaml (40-60
# minutes on 2 CPU cores from nothing, most of it in the test-time-trained methods). The grid
# resumes: cells whose complete report exists are skipped, so running this again does no work.
set -euo pipefail
cd "$(dirname "$0")/.."
fusion_bench -m experiment=tiny_clip_TA8
python scripts/collect_reports.py multirun/experiment/tiny_clip_TA8 -o results/clip-vit-tiny_TA8.md \
  --title "Offline tiny CLIP benchmark, 8 tasks (modelpool=clip-vit-tiny, taskpool=clip-vit-tiny_TA8)" \
  --command "bash scripts/tiny_table.sh" --readme-block tiny-results \
  --plots results/plots/clip-vit-tiny_TA8
for fmt in csv tex; do
  python scripts/collect_reports.py multirun/experiment/tiny_clip_TA8 -o "results/clip-vit-tiny_TA8.$fmt" \
    --title "Offline tiny CLIP benchmark, 8 tasks"
done
