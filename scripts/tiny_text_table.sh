#!/usr/bin/env bash
# Regenerate results/flan-t5-tiny_glue.md, results/flan-t5-tiny_glue_lora.md and
# results/gpt2-tiny_glue.md: the methods that apply to language models, with their published
# defaults, on the offline tiny text benchmark (one Hydra multirun per pool, collected from the
# report.json files). simple_ensemble (no text generation) and the Concrete / Twin methods are
# left out (no generation; Concrete and Twin not yet wired to text pools). Optional argument: the parent dir of the sweeps (default multirun/tiny_text).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-multirun/tiny_text}"
rm -rf "$out"
common="dummy,individual,simple_average,task_arithmetic,ties_merging,dare_task_arithmetic"
common="$common,model_stock,fisher_merging,regmean,regmean_plusplus,adamerging,weight_ensembling_moe,smile_upscaling"
run() { # pool taskpool methods metric title
  fusion_bench -m "method=$3" "modelpool=$1" "taskpool=$2" hydra.sweep.dir="$out/$1"
  python scripts/collect_reports.py "$out/$1" -o "results/$1.md" --metric "$4" \
    --title "$5 (modelpool=$1, taskpool=$2)" --command "bash scripts/tiny_text_table.sh"
}
run flan-t5-tiny_glue flan-t5-tiny_glue_text_generation "$common" score \
  "Offline tiny text benchmark, Flan-T5-like, full fine-tuned experts, 8 GLUE-style tasks"
run flan-t5-tiny_glue_lora flan-t5-tiny_glue_text_generation "$common" score \
  "Offline tiny text benchmark, Flan-T5-like, LoRA experts merged into dense weights"
run gpt2-tiny_glue gpt2-tiny_glue "${common#dummy,}" accuracy \
  "Offline tiny text benchmark, GPT-2-like, 7 GLUE-style classification tasks"
