import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The tiny-benchmark cache: $FUSION_BENCH_CACHE if set (CI, reruns), else a temp dir."""
    env = os.environ.get("FUSION_BENCH_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("fb_cache")


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
