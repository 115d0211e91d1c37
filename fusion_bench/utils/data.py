"""Opening a split of a dataset wherever it lives (shared by the image and text task pools).

A dataset location in a task config is one of
  * a directory written by ``save_to_disk`` (a ``DatasetDict``: the split is picked; a
    ``Dataset``: used as it is);
  * a parquet file (it *is* the split) or a directory of parquet files (the files named after the
    split, e.g. ``test-00000-of-00001.parquet`` or ``test/*.parquet``; if no file is named after
    any split, all of them);
  * any other local directory ``datasets.load_dataset`` understands (an image folder, a clone of
    a hub dataset repository);
  * ``tiny://<profile>/...``, a dataset of the offline tiny benchmark;
  * a hub id (``tanganke/eurosat``): read from the local HF datasets cache first, downloaded only
    if the hub is reachable, otherwise a one-line :class:`FusionBenchError` at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fusion_bench.errors import FusionBenchError
from fusion_bench.utils.hub import hub_reachable, resolve_location

if TYPE_CHECKING:
    import datasets

# Split names datasets infers from file names (GLUE's MNLI ones first: they extend shorter names); a parquet file named after none of them is taken
# to belong to whatever split the config asks for.
_KNOWN_SPLITS = (
    "validation_matched",
    "validation_mismatched",
    "test_matched",
    "test_mismatched",
    "train",
    "validation",
    "valid",
    "val",
    "dev",
    "test",
    "eval",
)


def load_dataset_split(
    location: str, *, split: str, subset: str | None = None, what: str, hint: str
) -> datasets.Dataset:
    """Open split ``split`` of the dataset at ``location``.

    Args:
        location: local path, parquet file/dir, ``tiny://`` location or hub id.
        split: split to read (e.g. ``"test"``).
        subset: dataset configuration name on the hub (e.g. SVHN's ``"cropped_digits"``).
        what: what is loaded, for error messages (e.g. ``"dataset of task 'eurosat'"``).
        hint: the override that points it at a local copy
            (e.g. ``"taskpool.tasks.eurosat.dataset=/path/to/dir"``).

    Raises:
        FusionBenchError: the location does not exist, the split is missing, or the hub is needed
            but unreachable.
    """
    path, is_local = resolve_location(location)
    if not is_local:
        return _load_hub(path, split=split, subset=subset, what=what, hint=hint)
    p = Path(path)
    if p.is_file() or _parquet_files(p):
        return _load_parquet(p, split=split, what=what)
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        return _load_saved(p, split=split, what=what)
    import datasets

    try:
        return datasets.load_dataset(str(p), name=subset, split=split)
    except Exception as e:  # datasets raises many types; the user needs the location and cause
        raise FusionBenchError(f"cannot read {what} from '{p}' (split '{split}'): {e}") from e


def _load_saved(path: Path, *, split: str, what: str) -> datasets.Dataset:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise FusionBenchError(
                f"{what} at '{path}' has no split '{split}'; splits: {', '.join(ds)}"
            )
        return ds[split]
    return ds  # a single saved Dataset is the split itself


def _parquet_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(path.rglob("*.parquet"))


def _split_of(file: Path, root: Path) -> str | None:
    """Split a parquet file belongs to, from its name or its directory, as datasets infers it."""
    parts = [*file.relative_to(root).parent.parts, file.stem]
    for part in parts:
        name = part.lower()
        for split in _KNOWN_SPLITS:  # longest names first: validation_matched before validation
            if name == split or name.startswith((f"{split}-", f"{split}.")):
                return split
    return None


def _load_parquet(path: Path, *, split: str, what: str) -> datasets.Dataset:
    import datasets

    if path.is_file():
        files = [path]
    else:
        files = _parquet_files(path)
        by_split = {f: _split_of(f, path) for f in files}
        named = [f for f, s in by_split.items() if s == split]
        if named:
            files = named
        elif any(s is not None for s in by_split.values()):
            found = sorted({s for s in by_split.values() if s})
            raise FusionBenchError(
                f"{what}: no parquet file for split '{split}' under '{path}' "
                f"(found splits: {', '.join(found)})"
            )
    # Files are listed under the requested split name so `split=` selects exactly them.
    return datasets.load_dataset(
        "parquet", data_files={split: [str(f) for f in files]}, split=split
    )


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make ``datasets`` / ``huggingface_hub`` skip the network for the duration.

    Both libraries read ``HF_HUB_OFFLINE`` once at import, so setting the environment variable
    now would have no effect; their module-level flags are what they check on every call.
    With them set, ``load_dataset`` falls back to the local datasets cache at once.
    """
    from unittest import mock

    import datasets.config
    import huggingface_hub.constants

    with (
        mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
        mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True),
    ):
        yield


def _load_hub(
    hub_id: str, *, split: str, subset: str | None, what: str, hint: str
) -> datasets.Dataset:
    import datasets

    try:
        with _hub_offline():
            return datasets.load_dataset(hub_id, name=subset, split=split)
    except Exception:  # not (completely) in the local cache: fall through to the hub
        pass
    if not hub_reachable():
        raise FusionBenchError(
            f"cannot reach the Hugging Face hub to fetch {what} '{hub_id}' (offline and not in "
            f"the HF datasets cache); pass a local path instead: {hint}"
        )
    return datasets.load_dataset(hub_id, name=subset, split=split)


def check_columns(ds: datasets.Dataset, columns: Sequence[str], *, task: str, hint: str) -> None:
    """Raise a :class:`FusionBenchError` naming the task and column if one is missing.

    Args:
        ds: the dataset.
        columns: required column names.
        task: task name, for the message.
        hint: how to name another column (e.g. ``"taskpool.tasks.x.image_column=..."``).
    """
    for col in columns:
        if col not in ds.column_names:
            raise FusionBenchError(
                f"task '{task}': the dataset has no column '{col}' (columns: "
                f"{', '.join(ds.column_names)}); set the right one with {hint}"
            )


def num_label_classes(ds: datasets.Dataset, label_column: str) -> int | None:
    """Number of classes declared by a ``ClassLabel`` column, else ``None``."""
    feature = ds.features.get(label_column)
    return getattr(feature, "num_classes", None)
