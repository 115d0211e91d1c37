"""The offline tiny GLUE text benchmark: miniature Flan-T5 and GPT-2 + GLUE experts, built locally.

The real text benchmark is ``google/flan-t5-base`` with full fine-tuned experts
``tanganke/flan-t5-base_glue-<task>`` and LoRA experts ``..._glue-<task>_lora-16``, evaluated
text-to-text on the GLUE validation splits; the GPT-2 one is ``gpt2`` with fully fine-tuned
``GPT2ForSequenceClassification`` experts ``tanganke/gpt2_<task>`` on 7 tasks (no STS-B). This
is their miniature: procedural English-like GLUE datasets (:mod:`.data`) with GLUE's columns
and labels, a word-level T5 tokenizer (:mod:`.tokenizer`), a tiny
``T5ForConditionalGeneration`` "Flan"-pretrained on all 8 tasks with shallow-heuristic labels,
and per task a full expert and a PEFT LoRA expert trained on the true labels (:mod:`.train`);
and a tiny GPT-2 with a GPT-2-style word-level tokenizer, pretrained as a causal LM on the
tasks' training texts, with one sequence-classification expert per task (:mod:`.gpt2`).
Everything is stored in the real formats, so the real loading, prompting, generation and
scoring code runs on it unchanged::

    <cache_dir()>/tiny_text/<profile>-seed<seed>-v<BUILD_VERSION>/
        flan-t5/pretrained/     T5ForConditionalGeneration.save_pretrained + tokenizer files
        flan-t5/experts/<task>/ full fine-tuned experts (+ tokenizer files)
        flan-t5/lora/<task>/    PEFT LoRA adapters (adapter_config.json, safetensors; the base
                                is recorded as tiny-text://<profile>/flan-t5/pretrained)
        gpt2/pretrained/        GPT2Model.save_pretrained + GPT-2-style tokenizer files
        gpt2/experts/<task>/    GPT2ForSequenceClassification experts, 7 tasks (no stsb)
        datasets/<task>/        DatasetDict.save_to_disk with GLUE's columns and splits
        BUILD_INFO.json         profile, seed, version, parameters, timings, scores (written last)

Importing this package is cheap; torch / transformers / datasets / peft load only when building.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusion_bench.tinybench._cache import TinyBenchmark

BUILD_VERSION = 2
"""Bump whenever the recipe (data, tokenizer, model, training) changes: old caches are ignored."""

TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")
"""GLUE task names, in benchmark order (the names of :data:`fusion_bench.tasks.glue.GLUE_TASKS`)."""

GPT2_TASKS = tuple(t for t in TASKS if t != "stsb")
"""Tasks with a GPT-2 classification expert (the real benchmark's 7: STS-B is regression)."""


@dataclass(frozen=True)
class Profile:
    """Sizes and training hyperparameters of a build.

    Attributes:
        n_train: train examples per task (pretraining uses the union over tasks).
        n_val: validation examples per task (MNLI: per validation split).
        d_model / d_ff / layers / heads: T5 width, feed-forward width, encoder (= decoder)
            layers, attention heads.
        batch_size: batch size of every training stage.
        pretrain_steps / pretrain_lr: multi-task "Flan" pretraining.
        finetune_steps / finetune_lr: full fine-tuning of each expert.
        lora_steps / lora_lr / lora_r / lora_alpha: LoRA experts.
        gpt2_n_embd / gpt2_layers / gpt2_heads: GPT-2 width, blocks, attention heads.
        gpt2_pretrain_steps / gpt2_pretrain_lr: causal-LM pretraining of GPT-2.
        gpt2_finetune_steps / gpt2_finetune_lr: full fine-tuning of each GPT-2 classifier.
    """

    n_train: int
    n_val: int
    d_model: int
    d_ff: int
    layers: int
    heads: int
    batch_size: int
    pretrain_steps: int
    pretrain_lr: float
    finetune_steps: int
    finetune_lr: float
    lora_steps: int
    lora_lr: float
    lora_r: int
    lora_alpha: int
    gpt2_n_embd: int
    gpt2_layers: int
    gpt2_heads: int
    gpt2_pretrain_steps: int
    gpt2_pretrain_lr: float
    gpt2_finetune_steps: int
    gpt2_finetune_lr: float


PROFILES: dict[str, Profile] = {
    "default": Profile(
        n_train=3000,
        n_val=300,
        d_model=64,
        d_ff=256,
        layers=2,
        heads=4,
        batch_size=32,
        pretrain_steps=1500,
        pretrain_lr=1e-3,
        finetune_steps=120,
        finetune_lr=1e-3,
        lora_steps=120,
        lora_lr=5e-3,
        lora_r=8,
        lora_alpha=16,
        gpt2_n_embd=64,
        gpt2_layers=2,
        gpt2_heads=4,
        gpt2_pretrain_steps=800,
        gpt2_pretrain_lr=1e-3,
        gpt2_finetune_steps=150,
        gpt2_finetune_lr=5e-4,
    ),
    "smoke": Profile(
        n_train=200,
        n_val=40,
        d_model=32,
        d_ff=64,
        layers=1,
        heads=2,
        batch_size=32,
        pretrain_steps=60,
        pretrain_lr=1e-3,
        finetune_steps=10,
        finetune_lr=1e-3,
        lora_steps=10,
        lora_lr=5e-3,
        lora_r=4,
        lora_alpha=8,
        gpt2_n_embd=32,
        gpt2_layers=1,
        gpt2_heads=2,
        gpt2_pretrain_steps=40,
        gpt2_pretrain_lr=1e-3,
        gpt2_finetune_steps=10,
        gpt2_finetune_lr=5e-4,
    ),
}
"""Build profiles: ``default`` (the benchmark) and ``smoke`` (seconds, for tests)."""


def _needed(root: Path) -> list[Path]:
    needed = [root / "flan-t5" / "pretrained" / "config.json"]
    needed += [root / "flan-t5" / "experts" / t / "config.json" for t in TASKS]
    needed += [root / "flan-t5" / "lora" / t / "adapter_config.json" for t in TASKS]
    needed += [root / "gpt2" / "pretrained" / "config.json"]
    needed += [root / "gpt2" / "experts" / t / "config.json" for t in GPT2_TASKS]
    return needed + [root / "datasets" / t / "dataset_dict.json" for t in TASKS]


BENCHMARK = TinyBenchmark(
    name="tiny_text",
    what="tiny text benchmark",
    version=BUILD_VERSION,
    profiles=PROFILES,
    needed=_needed,
    builder="fusion_bench.tinybench.text.build",
)
"""The cache layout and builder; the functions below are its methods."""

build_root = BENCHMARK.root
is_complete = BENCHMARK.is_complete
ensure_built = BENCHMARK.ensure_built
