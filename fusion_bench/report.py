"""The run report: what ran, with which versions, how long it took, what it scored."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fusion_bench.utils.io import atomic_write_json

_PACKAGES = (
    "fusion_bench",
    "torch",
    "torchvision",
    "transformers",
    "datasets",
    "hydra-core",
    "omegaconf",
    "lightning",
    "peft",
    "safetensors",
    "open_clip_torch",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on, plus Python and platform."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def average_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over tasks of every metric that all tasks report."""
    if not metrics:
        return {}
    common = set.intersection(*(set(m) for m in metrics.values()))
    return {k: sum(m[k] for m in metrics.values()) / len(metrics) for k in sorted(common)}


@dataclass
class Report:
    """Everything a run produces besides the fused model."""

    config: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    average: dict[str, float]
    timings_s: dict[str, float]
    peak_memory_mb: dict[str, float]
    task_metadata: dict[str, Any]
    versions: dict[str, str | None] = field(default_factory=package_versions)
    method_info: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    """Config group choices and command-line overrides of the run (empty outside Hydra)."""
    status: str = "completed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON atomically (temp file + rename)."""
        return atomic_write_json(path, self.to_dict())
