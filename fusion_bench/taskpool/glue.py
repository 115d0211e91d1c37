"""What the GLUE task pools share: task configs, the tokenizer, the tokenised evaluation splits.

:class:`~fusion_bench.taskpool.glue_text_generation.GLUETextGenerationTaskPool` (Flan-T5,
text-to-text) and :class:`~fusion_bench.taskpool.gpt2_glue.GPT2GLUETaskPool` (GPT-2 with per-task
heads) differ in how a task is tokenised and scored, not in how tasks, tokenizers and the
on-disk tokenisation cache are set up; that part lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.taskpool.base import BaseTaskPool

if TYPE_CHECKING:
    import datasets

    from fusion_bench.tasks.glue_data import TextTaskConfig


class GLUETaskPool(BaseTaskPool):
    """Base of the GLUE task pools.

    Args:
        tokenizer: tokenizer location (hub id, ``save_pretrained`` dir or ``tiny-text://``).
        tasks: ``name -> text task config`` (see :mod:`fusion_bench.tasks.glue_data`).
        batch_size: examples per batch.
        limit_batches: evaluate the first ``limit_batches * batch_size`` examples of each task
            (smoke runs); ``None``: all.
        cache_dir: tokenised-dataset cache; ``None``: ``<cache_dir()>/glue_tokenized``.
        split: evaluate every task on this split role: ``None`` / ``"test"`` = each task's own
            ``split``; ``"validation"`` = its ``validation_split``, which GLUE tasks do not have
            by default (their validation split is the evaluation split): set one to tune.
        lengths: the subclass's token-length limits by config key, checked to be >= 1.
    """

    right_pad_with_eos = False
    """Whether the tokenizer pads with EOS on the right (GPT-2 has no pad token)."""

    def __init__(
        self,
        tokenizer: str,
        tasks: Mapping[str, Mapping[str, Any]],
        *,
        batch_size: int,
        limit_batches: int | None,
        cache_dir: str | None,
        split: str | None,
        lengths: Mapping[str, int],
    ) -> None:
        from fusion_bench.tasks import with_split_role
        from fusion_bench.tasks.glue_data import parse_text_tasks

        self.split = split
        self.tasks: dict[str, TextTaskConfig] = with_split_role(
            parse_text_tasks(tasks, "taskpool"), split
        )
        if not self.tasks:
            raise FusionBenchError(
                "the task pool is empty: give at least one entry in taskpool.tasks"
            )
        sizes = {"batch_size": batch_size, **lengths}
        if min(sizes.values()) < 1 or (limit_batches is not None and limit_batches < 1):
            raise FusionBenchError(
                f"taskpool needs {', '.join(sizes)} >= 1 and limit_batches >= 1 or null"
            )
        self.tokenizer_location = str(tokenizer)
        self.batch_size = int(batch_size)
        self.limit_batches = limit_batches
        if cache_dir is None:
            from fusion_bench.constants import cache_dir as root

            cache_dir = str(root() / "glue_tokenized")
        self.cache_dir = str(cache_dir)
        self._tokenizer = None
        self._data: dict[str, Any] = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def metadata(self) -> dict[str, Any]:
        """``{task: {"version", "dataset", "subset", "split", ...}}`` for the report (subclasses
        add their own keys through :meth:`task_metadata`)."""
        return {
            n: {
                "version": t.version,
                "dataset": t.dataset,
                "subset": t.subset,
                "split": t.split,
                **self.task_metadata(n),
            }
            for n, t in self.tasks.items()
        }

    def task_metadata(self, name: str) -> dict[str, Any]:
        """Extra report metadata of task ``name``."""
        return {}

    def tokenizer(self) -> Any:
        """The tokenizer, loaded once."""
        if self._tokenizer is None:
            from fusion_bench.tasks.glue_data import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_location,
                hint="taskpool.tokenizer=/path/to/save_pretrained_dir",
                right_pad_with_eos=self.right_pad_with_eos,
            )
        return self._tokenizer

    def tokenize(self, ds: datasets.Dataset, cfg: TextTaskConfig) -> datasets.Dataset:
        """Task ``cfg``'s evaluation split ``ds``, tokenised for this pool's models."""
        raise NotImplementedError

    def dataset(self, name: str) -> datasets.Dataset:
        """Task ``name``'s evaluation split, tokenised (cached on disk)."""
        if name not in self._data:
            from fusion_bench.tasks.glue_data import load_text_split

            cfg = self.tasks[name]
            ds = load_text_split(cfg, cfg.split, "taskpool")
            if len(ds) == 0:
                raise FusionBenchError(
                    f"task '{name}': the {cfg.split} split of '{cfg.dataset}' is empty"
                )
            self._data[name] = self.tokenize(ds, cfg)
        return self._data[name]

    def prepare(self) -> None:
        """Load the tokenizer and every dataset now, so a bad location fails before fusing."""
        for name in self.tasks:
            self.dataset(name)
