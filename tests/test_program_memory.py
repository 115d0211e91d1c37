import sys

import pytest

from fusion_bench.program import _peak_rss_mb, _reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak-RSS reset is Linux-only")
def test_peak_rss_is_measured_per_run_not_per_process():
    """In a multirun every job shares one process; its peak must not carry over."""
    buf = bytearray(300 * 2**20)
    buf[:: 2**12] = b"x" * len(range(0, len(buf), 2**12))  # touch every page: 300 MiB resident
    high = _peak_rss_mb()
    del buf
    _reset_peak_rss()
    assert _peak_rss_mb() < high - 200
