"""GLUE task configs, their datasets and tokenisation, shared by the text task pools and model pools.

A text task entry (``taskpool.tasks.<name>`` or ``modelpool.tasks.<name>``) has ``dataset``
(hub id such as ``nyu-mll/glue``, ``save_to_disk`` dir, parquet or ``tiny-text://`` location),
``subset`` (alias ``name``; the GLUE configuration, default: the task name), ``split`` (default:
the task's GLUE validation split), ``text_task`` (registry entry of
:mod:`fusion_bench.tasks.glue`, default: the task name), optional ``template`` / ``labels``,
``label_column`` (default ``label``), ``train_split`` (default ``train``), ``validation_split``
(default none: GLUE's labelled validation split is the evaluation split) and ``metadata.version``.

Tokenised datasets are cached by ``datasets`` under ``<cache_dir()>/glue_tokenized`` with a key
over the dataset fingerprint, the tokenizer's vocabulary and settings, the template, label words,
task version and maximum length: changing any of them re-tokenises, nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.tasks.glue import GlueTask, get_glue_task, render_input, render_target

if TYPE_CHECKING:
    import datasets
    import torch

TEXT_TASK_KEYS = {
    "dataset",
    "subset",
    "name",
    "split",
    "text_task",
    "template",
    "labels",
    "label_column",
    "train_split",
    "validation_split",
    "metadata",
}

TOKENIZATION_VERSION = 1
"""Bump when the tokenisation below changes, so cached tokenised datasets are not reused."""


@dataclass(frozen=True)
class TextTaskConfig:
    """One GLUE task as configured (see the module docstring for the keys)."""

    name: str
    task: GlueTask
    dataset: str
    subset: str | None
    split: str
    label_column: str
    train_split: str
    validation_split: str | None
    version: Any

    def split_for(self, role: str) -> str:
        """Dataset split of a data role: ``train`` / ``validation`` / ``test`` (= evaluation)."""
        if role == "test":
            return self.split
        if role == "train":
            return self.train_split
        if role == "validation":
            if self.validation_split is None:
                raise FusionBenchError(
                    f"task '{self.name}' has no validation split apart from its evaluation "
                    f"split; set tasks.{self.name}.validation_split=<split> in the model pool"
                )
            return self.validation_split
        raise ValueError(f"split role must be train, validation or test, got {role!r}")


def parse_text_task(name: str, cfg: Mapping[str, Any], where: str) -> TextTaskConfig:
    """Validate one text task config (``where`` names it in errors, e.g. ``taskpool.tasks.cola``)."""
    from fusion_bench.tasks import check_task_entry

    version = check_task_entry(cfg, where, TEXT_TASK_KEYS)
    task = get_glue_task(str(cfg.get("text_task") or name), cfg.get("template"), cfg.get("labels"))
    validation = cfg.get("validation_split")
    return TextTaskConfig(
        name=name,
        task=task,
        dataset=str(cfg["dataset"]),
        subset=cfg.get("subset", cfg.get("name", task.name)),
        split=str(cfg.get("split") or task.validation_split),
        label_column=str(cfg.get("label_column", "label")),
        train_split=str(cfg.get("train_split", "train")),
        validation_split=None if validation is None else str(validation),
        version=version,
    )


def parse_text_tasks(tasks: Mapping[str, Any] | None, prefix: str) -> dict[str, TextTaskConfig]:
    """``{name: TextTaskConfig}`` of a ``tasks`` mapping (``prefix``: its config path)."""
    from fusion_bench.zero_shot.tasks import plain

    tasks = plain(tasks) or {}
    return {str(n): parse_text_task(str(n), c, f"{prefix}.tasks.{n}") for n, c in tasks.items()}


def load_text_split(cfg: TextTaskConfig, split: str, prefix: str) -> datasets.Dataset:
    """Split ``split`` of the task's dataset, checked for the template's columns and labels."""
    from fusion_bench.utils.data import check_columns, load_dataset_split

    hint = f"{prefix}.tasks.{cfg.name}.dataset=/path/to/dir"
    ds = load_dataset_split(
        cfg.dataset,
        split=split,
        subset=cfg.subset,
        what=f"dataset of task '{cfg.name}'",
        hint=hint,
    )
    check_columns(ds, [*cfg.task.text_columns, cfg.label_column], task=cfg.name, hint=hint)
    return ds


def load_tokenizer(location: str, *, hint: str, right_pad_with_eos: bool = False) -> Any:
    """``AutoTokenizer`` of ``location`` (hub id, local dir or ``tiny-text://``).

    Args:
        location: where the tokenizer lives.
        hint: the override that points it at a local copy, for the offline error message.
        right_pad_with_eos: for decoder-only classifiers (GPT-2 has no padding token): pad with
            EOS if there is no padding token, on the right (the last real token is pooled).
    """
    from transformers import AutoTokenizer

    from fusion_bench.utils.hub import load_with_fallback

    tok = load_with_fallback(AutoTokenizer.from_pretrained, location, what="tokenizer", hint=hint)
    if right_pad_with_eos:
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
    return tok


def tokenizer_key(tokenizer: Any) -> str:
    """A short digest of what the tokenizer turns text into (vocabulary and settings)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # slow tokenizers: the vocabulary and special tokens stand in for the model
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(
        repr((tokenizer.padding_side, tokenizer.pad_token_id, tokenizer.eos_token_id)).encode()
    )
    return h.hexdigest()[:16]


def _cached_map(
    ds: datasets.Dataset,
    cfg: TextTaskConfig,
    tokenizer: Any,
    encode: Any,
    *,
    kind: str,
    max_length: int,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    """``ds.map(encode)``, cached under a key of everything that determines the result."""
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(
            json.dumps(
                [
                    TOKENIZATION_VERSION,
                    kind,
                    ds._fingerprint,
                    tokenizer_key(tokenizer),
                    cfg.task.template,
                    cfg.task.labels,
                    cfg.label_column,
                    str(cfg.version),
                    max_length,
                ]
            ).encode()
        ).hexdigest()[:20]
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"{cfg.name}-{key}.arrow")
    return ds.map(
        encode,
        batched=True,
        batch_size=1000,
        cache_file_name=cache_file,
        load_from_cache_file=cache_file is not None,
        desc=f"tokenising {cfg.name}",
    )


def _rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def tokenize_seq2seq(
    ds: datasets.Dataset,
    cfg: TextTaskConfig,
    tokenizer: Any,
    *,
    max_length: int,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    """Add ``input_ids`` / ``attention_mask`` (prompt) and ``target_ids`` (verbalised label).

    Prompts longer than ``max_length`` tokens are truncated. With ``cache_dir`` the result is
    cached on disk under a key of everything that determines it (see the module docstring).
    """
    task, label_column = cfg.task, cfg.label_column

    def encode(batch: dict[str, list]) -> dict[str, list]:
        rows = _rows(batch)
        enc = tokenizer(
            [render_input(task, r) for r in rows], truncation=True, max_length=max_length
        )
        tgt = tokenizer([render_target(task, r[label_column]) for r in rows], truncation=True)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "target_ids": tgt["input_ids"],
        }

    return _cached_map(
        ds, cfg, tokenizer, encode, kind="seq2seq", max_length=max_length, cache_dir=cache_dir
    )


def tokenize_classification(
    ds: datasets.Dataset,
    cfg: TextTaskConfig,
    tokenizer: Any,
    *,
    max_length: int,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    """Add ``input_ids`` / ``attention_mask`` of the task's raw text columns (no prompt): one
    sentence, or a pair through the tokenizer's pair encoding (GPT-2: the two concatenated),
    truncated to ``max_length`` tokens — the input of sequence-classification heads."""
    columns = cfg.task.text_columns

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[c] for c in columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return _cached_map(
        ds,
        cfg,
        tokenizer,
        encode,
        kind="classification",
        max_length=max_length,
        cache_dir=cache_dir,
    )


class PaddedTextDataset:
    """``(inputs, label)`` pairs for model-pool methods: ``inputs`` is ``[2, length]`` holding
    the prompt's token ids and attention mask, right-padded to the dataset's longest prompt so
    that the default DataLoader collation stacks them.

    With ``targets=True`` (a dataset from :func:`tokenize_seq2seq`) ``inputs`` is
    ``[4, length]``: rows 2 and 3 hold the verbalised label's token ids and their mask, for
    teacher-forced forward passes (``length`` then also covers the longest target).

    Args:
        ds: a dataset tokenised by :func:`tokenize_seq2seq` or :func:`tokenize_classification`.
        pad_id: the tokenizer's padding id.
        label_column: column of the gold labels (class ids, or STS-B scores).
        targets: add the target rows (needs the ``target_ids`` column).
    """

    def __init__(
        self,
        ds: datasets.Dataset,
        pad_id: int,
        label_column: str = "label",
        targets: bool = False,
    ) -> None:
        columns = ["input_ids", label_column] + (["target_ids"] if targets else [])
        self.ds = ds.select_columns(columns)
        self.label_column = label_column
        self.targets = targets
        self.pad_id = int(pad_id)
        self.length = max((len(x) for x in self.ds["input_ids"]), default=1)
        if targets:
            self.length = max(self.length, max((len(x) for x in self.ds["target_ids"]), default=1))

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        import torch

        row = self.ds[int(index)]
        sequences = [row["input_ids"]] + ([row["target_ids"]] if self.targets else [])
        out = torch.zeros((2 * len(sequences), self.length), dtype=torch.long)
        for i, ids in enumerate(sequences):
            out[2 * i].fill_(self.pad_id)
            out[2 * i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            out[2 * i + 1, : len(ids)] = 1
        return out, row[self.label_column]
