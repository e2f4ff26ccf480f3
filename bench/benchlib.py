"""Helpers shared by bench/matrix.py, bench/leak.py and bench/pipecat/compare.py (not part of the package)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The machine counts as quiet when everything on it together uses less than this (% of one core)
# for QUIET_SECONDS in a row. Other sessions' test suites share this machine; a benchmark run
# beside one measures the scheduler, not the gateway.
QUIET_PCT = 25.0
QUIET_SECONDS = 5


def wait_quiet(max_wait_s: float, log=print) -> dict[str, Any]:
    """Block until the machine is quiet or `max_wait_s` passed; returns what was seen."""
    import psutil

    start = time.monotonic()
    streak = 0
    last = 0.0
    psutil.cpu_percent(None, percpu=True)
    while True:
        time.sleep(1.0)
        last = sum(psutil.cpu_percent(None, percpu=True))
        streak = streak + 1 if last < QUIET_PCT else 0
        waited = time.monotonic() - start
        if streak >= QUIET_SECONDS:
            return {"quiet": True, "waited_s": round(waited, 1), "busy_pct": round(last, 1)}
        if waited >= max_wait_s:
            log(f"  machine still busy ({last:.0f}% of a core in use by others) after {waited:.0f} s: running anyway")
            return {"quiet": False, "waited_s": round(waited, 1), "busy_pct": round(last, 1)}


def fmt(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def loadgen_limits(r: dict[str, Any]) -> list[str]:
    """The report's load-generator verdict, judged again with the current bounds of loadgen.bench."""
    from loadgen.bench import loadgen_limits as judge

    cfg = r.get("config", {})
    shared = cfg.get("loadgen_cpu") is not None and cfg.get("emulators_cpu") == cfg.get("loadgen_cpu")
    emu = (r.get("emulators") or {}).get("cpu_pct_load") if shared else None
    return judge(r["loadgen"], emu, r["calls"]["placed"])


def row_figures(r: dict[str, Any] | None) -> dict[str, Any]:
    """The comparison figures of one bench report (None for a run that did not happen)."""
    if not r:
        return {}
    gw = r.get("gateway") or {}
    oc = r.get("overhead_caller_ms") or {}
    og = r.get("overhead_gateway_ms") or {}
    wire = r.get("overhead_wire_ms") or {}
    ow = wire.get("total") or {}
    rig = (wire.get("rig") or {}).get("total") or {}
    og_p99 = og.get("p99")
    if og_p99 is not None:
        from gateway.metrics import OVERHEAD_BUCKETS

        lowest = OVERHEAD_BUCKETS[0] * 1000
        if og_p99 <= lowest:  # every observation in the lowest bucket: the histogram only says "under it"
            og_p99 = f"≤{lowest:g}"
    return {
        "v2v_p50": r["voice_to_voice_ms"]["p50"], "v2v_p95": r["voice_to_voice_ms"]["p95"],
        "v2v_p99": r["voice_to_voice_ms"]["p99"],
        "overhead_caller_p50": oc.get("p50"), "overhead_caller_p99": oc.get("p99"),
        "overhead_gateway_p99": og_p99,
        "overhead_wire_p50": ow.get("p50"), "overhead_wire_p99": ow.get("p99"),
        "rig_p50": rig.get("p50"), "rig_p99": rig.get("p99"),
        "clear_p50": r["barge_in_clear_ms"]["p50"], "clear_p95": r["barge_in_clear_ms"]["p95"],
        "underruns": r["underruns"]["count"], "underrun_pct": r["underruns"]["pct_frames"],
        "underrun_time_pct": r["underruns"]["pct_time"],
        "failed": r["calls"]["failed"], "placed": r["calls"]["placed"],
        "reply_timeouts": r["turns"]["reply_timeouts"],
        "cpu_steady": gw.get("cpu_pct_steady"), "cpu_load": gw.get("cpu_pct_load"),
        "rss_idle_mb": gw.get("rss_idle_mb"), "rss_peak_mb": gw.get("rss_peak_mb"),
        "rss_per_call_kb": gw.get("rss_per_call_kb"),
        "loadgen_limited": bool(loadgen_limits(r)), "contended": r["verdict"].get("contended", False),
        # Voice-to-voice by the kind of caller line (script / answer / tool): the off-script conversation.
        **{f"v2v_{kind}_{q}": s.get(q) for kind, s in (r.get("voice_to_voice_by_line_kind_ms") or {}).items()
           for q in ("p50", "p95")},
    }
