#!/usr/bin/env bash
# Regenerate results/flan-t5-tiny_glue.md, results/flan-t5-tiny_glue_lora.md and
# results/gpt2-tiny_glue.md (+ plots in results/plots/<pool>/ and the README's summary block):
# the methods that apply to language models, with their published defaults, on the offline tiny text benchmark — the grids
# config/experiment/tiny_{flan-t5_glue,flan-t5_glue_lora,gpt2_glue}.yaml (about 40 minutes each
# on 2 idle CPU cores, most of it in AdaMerging and WEMoE). simple_ensemble (no text generation)
# and the Concrete methods are not in these grids; Twin-Merging is in the T5-full and GPT-2 grids
# (glue/twin_merging: router trained on the train splits). The grids resume: complete cells are
# skipped, failed or interrupted ones re-run; a failed cell does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
run() { # experiment result-name metric title
  fusion_bench -m "experiment=$1" || status=1
  python scripts/collect_reports.py "multirun/experiment/$1" -o "results/$2.md" --metric "$3" \
    --title "$4" --command "bash scripts/tiny_text_table.sh" --plots "results/plots/$2" || status=1
}
run tiny_flan-t5_glue flan-t5-tiny_glue score \
  "Offline tiny text benchmark, Flan-T5-like, full fine-tuned experts, 8 GLUE-style tasks"
run tiny_flan-t5_glue_lora flan-t5-tiny_glue_lora score \
  "Offline tiny text benchmark, Flan-T5-like, LoRA experts merged into dense weights"
run tiny_gpt2_glue gpt2-tiny_glue accuracy \
  "Offline tiny text benchmark, GPT-2-like, 7 GLUE-style classification tasks"
python scripts/summary_table.py --readme-block tiny-text-summary \
  --column "T5, full experts=multirun/experiment/tiny_flan-t5_glue@score" \
  --column "T5, LoRA experts=multirun/experiment/tiny_flan-t5_glue_lora@score" \
  --column "GPT-2 (7 tasks)=multirun/experiment/tiny_gpt2_glue@accuracy" || status=1
exit $status
