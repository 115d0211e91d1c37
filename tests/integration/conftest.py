import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The tiny-benchmark cache: $FUSION_BENCH_CACHE if set (CI, reruns), else a temp dir shared
    by the pytest-xdist workers of this run (builds are locked, so one worker builds and the
    others wait for it)."""
    env = os.environ.get("FUSION_BENCH_CACHE")
    if env:
        return Path(env)
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, above the per-worker ones
    path = base / "fb_cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def cli(cache_dir, tmp_path):
    """Run the installed ``fusion_bench`` console script from a temporary working directory."""
    exe = shutil.which("fusion_bench") or str(Path(sys.executable).parent / "fusion_bench")

    def _run(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [exe, *args],
            cwd=tmp_path,
            env=_run.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"fusion_bench {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            )
        return proc

    _run.cwd = tmp_path
    _run.exe = exe
    _run.env = {**os.environ, "FUSION_BENCH_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    return _run
