"""Sequential short calls against one gateway: memory stays bounded and resources come back.

The script's default is 2,000 calls (`bench/leak.py`, about 12 minutes), where RSS may grow at most
5 MB over the second 1,000 (5 kB a call). Measured there: RSS climbs ~25-30 MB over the first
~300 calls (allocator arenas, pools; tracemalloc shows no Python objects piling up) and is flat
after. CI runs 150 calls after 30 warm-up calls (about a minute), which is all inside that climb,
so it only catches a gross leak: RSS may grow at most 30 MB over the 150 calls (200 kB a call).
Descriptors, threads and TCP connections must return to the post-warm-up baseline (plus a small
slack for pooled keep-alive connections), and the active-call gauge to 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI_CALLS = 150
CI_WARMUP = 30
CI_MAX_GROWTH_MB = 30.0


@pytest.mark.bench
@pytest.mark.timeout(300)
def test_short_calls_do_not_leak(tmp_path, cloud_path):
    out = tmp_path / "leak.json"
    proc = subprocess.run(
        [sys.executable, "bench/leak.py", "--calls", str(CI_CALLS), "--warmup", str(CI_WARMUP),
         "--sample-every", "25", "--max-growth-mb", str(CI_MAX_GROWTH_MB), "--max-late-growth-mb", "0",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed"] == 0, report["errors"]
    assert report["rss_growth_mb"] is not None and report["rss_growth_mb"] <= CI_MAX_GROWTH_MB, report["samples"]
    checks = report["checks"]
    assert checks["fds_back"] and checks["tcp_back"] and checks["threads_back"], (report["baseline"], report["after"])
    assert checks["no_active_calls"], report["active_calls_after"]
    assert proc.returncode == 0, proc.stdout[-2000:]
