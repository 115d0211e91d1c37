"""Developer check of a tiny-benchmark build: does it have the shape of the field's results?

Loads a build from disk exactly as users would (``CLIPModel`` / ``CLIPVisionModel`` /
``AutoTokenizer`` / ``AutoImageProcessor`` ``from_pretrained``, ``datasets.load_from_disk``,
:func:`~fusion_bench.models.clip_zero_shot.image_transform`) and measures zero-shot top-1
accuracy of the pretrained model, each expert on its own task, task arithmetic and simple
averaging. The two merges here are ten-line state-dict sums for this check only; the real
merging methods live in :mod:`fusion_bench.method`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch

from fusion_bench.tinybench import TASKS


def _load(root: Path):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    pre = root / "pretrained"
    return (
        CLIPModel.from_pretrained(pre).eval(),
        AutoTokenizer.from_pretrained(pre),
        AutoImageProcessor.from_pretrained(pre),
    )


@torch.inference_mode()
def check_build(
    root: str | Path, *, lambdas: Sequence[float] = (0.3,), split: str = "test"
) -> dict[str, dict[str, float]]:
    """Accuracy table ``{model: {task: acc, ..., "avg": mean}}`` of a build.

    Models: ``pretrained``, ``experts`` (each on its own task), ``task_arithmetic@<λ>``
    (``θ0 + λ Σ_t (θ_t - θ0)``) for each ``λ``, ``simple_average`` (``mean_t θ_t``).
    """
    import datasets
    from transformers import CLIPVisionModel

    from fusion_bench.models.clip_zero_shot import image_transform, zero_shot_head, zero_shot_logits
    from fusion_bench.tasks.clip_classification import get_task

    root = Path(root)
    clip, tokenizer, processor = _load(root)
    transform = image_transform(processor)
    heads, tests = {}, {}
    for task in TASKS:
        spec = get_task(task)
        heads[task] = zero_shot_head(clip, tokenizer, spec.classnames, spec.templates)
        ds = datasets.load_from_disk(str(root / "datasets" / task))[split]
        tests[task] = (
            torch.stack([transform(im) for im in ds["image"]]),
            torch.tensor(ds["label"]),
        )

    def acc(vision, task: str) -> float:
        x, y = tests[task]
        logits = zero_shot_logits(clip, vision, x, heads[task])
        return float((logits.argmax(-1) == y).float().mean())

    theta0 = {k: v.clone() for k, v in clip.vision_model.state_dict().items()}
    experts = {
        t: CLIPVisionModel.from_pretrained(root / "experts" / t).eval().state_dict() for t in TASKS
    }
    merged = copy.deepcopy(clip.vision_model)

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        merged.load_state_dict(state)
        return {t: acc(merged, t) for t in TASKS}

    table = {"pretrained": {t: acc(clip.vision_model, t) for t in TASKS}, "experts": {}}
    for t in TASKS:
        merged.load_state_dict(experts[t])
        table["experts"][t] = acc(merged, t)
    for lam in lambdas:
        table[f"task_arithmetic@{lam:g}"] = evaluate(
            {k: v + lam * sum(e[k] - v for e in experts.values()) for k, v in theta0.items()}
        )
    table["simple_average"] = evaluate(
        {k: sum(e[k] for e in experts.values()) / len(experts) for k in theta0}
    )
    for row in table.values():
        row["avg"] = sum(row[t] for t in TASKS) / len(TASKS)
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """Plain-text table of accuracies in percent, one row per model."""
    cols = [*TASKS, "avg"]
    width = max(len(r) for r in table) + 2
    lines = [" " * width + "".join(f"{c[:9]:>10s}" for c in cols)]
    for name, row in table.items():
        lines.append(
            f"{name:<{width}s}" + "".join(f"{100 * row[c]:10.1f}" for c in cols if c in row)
        )
    return "\n".join(lines)
