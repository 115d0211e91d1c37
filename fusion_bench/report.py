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


_KEY_EXCLUDED = frozenset({"skip_completed", "objective"})
"""Root keys that do not change a run's result (how to schedule it, or what a sweeper reads
from it: ``objective``), not what it computes."""


def config_key(resolved: dict[str, Any], builds: list[str] | None = None) -> str:
    """SHA-256 of the resolved config (canonical JSON, without :data:`_KEY_EXCLUDED` keys) and of
    the identities of the tiny builds it uses (``builds``, see
    :func:`fusion_bench.utils.hub.tiny_builds`).

    It identifies what a grid cell computes: a cell is skipped when its report carries the
    same key, and re-run when the config changed (e.g. an edited method default) or a tiny
    benchmark it reads was rebuilt with a new recipe version. Package versions are recorded in
    the report but are not part of the key.
    """
    import hashlib
    import json

    kept = {k: v for k, v in resolved.items() if k not in _KEY_EXCLUDED}
    if builds:
        kept = {**kept, "__tiny_builds__": list(builds)}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def completed_report(path: str | Path, key: str) -> Report | None:
    """The report at ``path`` if it is complete and was computed from config ``key``."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # missing, or unreadable: the cell is not done
    if not isinstance(data, dict) or data.get("status") != "completed":
        return None
    if data.get("config_key") != key:
        return None
    known = {f for f in Report.__dataclass_fields__}
    try:
        return Report(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # written by a version with other required fields
        return None


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
    config_key: str = ""
    """:func:`config_key` of :attr:`config`: a grid cell whose report has the same key is done."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON atomically (temp file + rename)."""
        return atomic_write_json(path, self.to_dict())
