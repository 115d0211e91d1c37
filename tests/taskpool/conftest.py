"""Fixtures of the task-pool tests (the tiny CLIP and datasets come from tests/conftest.py)."""

from __future__ import annotations

import pytest
from clip_helpers import CLASSNAMES, task_cfg


@pytest.fixture
def make_pool(clip_dir, dataset_dirs, tmp_path):
    """Factory of ``CLIPZeroShotTaskPool`` on the tiny CLIP and datasets (fresh head cache)."""
    from fusion_bench.taskpool.clip_zero_shot import CLIPZeroShotTaskPool

    def make(tasks: dict | None = None, **kwargs):
        if tasks is None:
            tasks = {n: task_cfg(dataset_dirs[n], c) for n, c in CLASSNAMES.items()}
        kwargs.setdefault("batch_size", 4)
        kwargs.setdefault("head_cache_dir", str(tmp_path / "heads"))
        return CLIPZeroShotTaskPool(clip_model=str(clip_dir), tasks=tasks, **kwargs)

    return make
