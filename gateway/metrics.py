"""Prometheus metrics. One module so every name is in one place.

Buckets fit voice: a human notices 100 ms, a call feels broken past 2-3 s. Labels are bounded
sets (provider, role, error type, direction), never a call sid: a label per call would leak a
time series per call forever.

With several uvicorn workers, `PROMETHEUS_MULTIPROC_DIR` switches prometheus_client to its
multiprocess mode (set by `voicegate serve --workers N`), and `/metrics` aggregates all workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)

VOICE_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
# Gateway overhead is milliseconds: the target is p99 under 10 ms.
OVERHEAD_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5)

_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_GAUGE_MODE = {"multiprocess_mode": "livesum"} if _MULTIPROCESS else {}

ACTIVE_CALLS = Gauge("voicegate_active_calls", "Calls in progress", **_GAUGE_MODE)
CALLS = Counter("voicegate_calls_total", "Voice sessions started", ["direction"])
CALLS_ENDED = Counter("voicegate_calls_ended_total", "Voice sessions ended", ["reason"])
TURNS = Counter("voicegate_turns_total", "Caller turns answered", ["interrupted"])
BARGE_INS = Counter("voicegate_barge_ins_total", "Replies stopped for the caller (a clear sent)")
INTERRUPTIONS = Counter("voicegate_interruptions_total",
                        "How interruptions of the agent ended: confirmed by words, resumed, backchannel, "
                        "or rejected by the model VAD as noise or echo", ["outcome"])
SPEECH_ANALYSES = Counter("voicegate_speech_analyses_total", "Model VAD analyses run at turn-taking decisions")
ERRORS = Counter("voicegate_errors_total", "Errors by type and provider", ["type", "provider"])
PROTOCOL_ERRORS = Counter("voicegate_protocol_errors_total", "Malformed or hostile inbound messages", ["reason"])
FRAMES_IN = Counter("voicegate_frames_in_total", "Inbound media messages")
FRAMES_OUT = Counter("voicegate_frames_out_total", "Outbound 20 ms media frames")
FRAMES_DROPPED = Counter("voicegate_frames_dropped_total", "Outbound frames dropped (slow or gone peer)")
UNDERRUNS = Counter("voicegate_playback_underruns_total", "Gaps in outbound audio while a reply played")

VAD_DELAY = Histogram("voicegate_vad_end_delay_seconds", "End of caller speech to VAD end-of-turn", buckets=VOICE_BUCKETS)
STT_LATENCY = Histogram("voicegate_stt_latency_seconds", "End of turn to final transcript", buckets=VOICE_BUCKETS)
LLM_FIRST_TOKEN = Histogram("voicegate_llm_first_token_seconds", "Reply request to first token", buckets=VOICE_BUCKETS)
LLM_FIRST_SENTENCE = Histogram("voicegate_llm_first_sentence_seconds", "Reply request to first speakable phrase",
                               buckets=VOICE_BUCKETS)
TTS_FIRST_BYTE = Histogram("voicegate_tts_first_byte_seconds", "First phrase to first synthesized audio",
                           buckets=VOICE_BUCKETS)
VOICE_TO_VOICE = Histogram("voicegate_voice_to_voice_seconds", "End of caller speech to first reply frame sent",
                           buckets=VOICE_BUCKETS)
GC_PAUSE = Histogram("voicegate_gc_pause_seconds", "Garbage collections run by the pacer, by generation",
                     ["generation"], buckets=OVERHEAD_BUCKETS)
GATEWAY_OVERHEAD = Histogram("voicegate_gateway_overhead_seconds",
                             "Voice-to-voice minus VAD wait and provider time", buckets=OVERHEAD_BUCKETS)

PROVIDER_REQUESTS = Counter("voicegate_provider_requests_total", "Provider requests", ["provider", "role"])
PROVIDER_ERRORS = Counter("voicegate_provider_errors_total", "Provider failures", ["provider", "role", "kind"])
PROVIDER_RETRIES = Counter("voicegate_provider_retries_total", "Provider retries", ["provider", "role"])
FALLBACKS = Counter("voicegate_fallbacks_total", "Fallbacks past an engine to the next in its chain",
                    ["role", "from_provider"])
BREAKER_STATE = Gauge("voicegate_circuit_breaker_state", "0 closed, 1 half-open, 2 open", ["provider"],
                      **({"multiprocess_mode": "max"} if _MULTIPROCESS else {}))

ENGINE_READY = Gauge("voicegate_engine_ready", "1 once an engine (chain) of a role is loaded and usable",
                     ["role", "engine"], **({"multiprocess_mode": "max"} if _MULTIPROCESS else {}))

CACHE = Counter("voicegate_response_cache_total", "Response cache lookups", ["result"])
QUICK_RESPONSES = Counter("voicegate_quick_responses_total", "Quick-response lookups", ["result"])
SHADOW_DIFFS = Counter("voicegate_shadow_differences_total", "Shadow mode: fast path differed from the LLM's")
QUALITY = Histogram("voicegate_reply_quality_score", "Per-reply quality score (0-100)",
                    buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100))
QUALITY_AVG = Gauge("voicegate_reply_quality_rolling_average", "Rolling average quality score",
                    **({"multiprocess_mode": "mostrecent"} if _MULTIPROCESS else {}))


def observe_turn(split: dict[str, float | None]) -> None:
    """Record one turn's latency split (milliseconds, None where a stage did not happen)."""
    for key, histogram in (
        ("vad_ms", VAD_DELAY), ("stt_ms", STT_LATENCY), ("llm_first_token_ms", LLM_FIRST_TOKEN),
        ("llm_first_sentence_ms", LLM_FIRST_SENTENCE), ("tts_first_byte_ms", TTS_FIRST_BYTE),
        ("voice_to_voice_ms", VOICE_TO_VOICE), ("gateway_overhead_ms", GATEWAY_OVERHEAD),
    ):
        value = split.get(key)
        if value is not None and value >= 0:
            histogram.observe(value / 1000.0)


def exposition() -> tuple[bytes, str]:
    if _MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# --- dashboard (gateway/dashboard.py) ---
DASHBOARD_SUBSCRIBERS = Gauge("voicegate_dashboard_subscribers", "Dashboards connected to the live feed", **_GAUGE_MODE)
DASHBOARD_DROPPED = Counter("voicegate_dashboard_dropped_total", "Dashboards dropped for not reading their feed")

# Shared state and deploys (issue 23).
REDIS_UP = Gauge("voicegate_redis_up", "1 while Redis answers; 0 while shared state runs on in-process state "
                 "(degraded)", **({"multiprocess_mode": "min"} if _MULTIPROCESS else {}))
REDIS_ERRORS = Counter("voicegate_redis_errors_total",
                       "Redis operations that failed, or were skipped because Redis was down", ["op"])
REDIS_OUTAGES = Counter("voicegate_redis_outages_total", "Times Redis became unavailable (degraded mode began)")
DRAINING = Gauge("voicegate_draining", "1 while this process drains for a deploy (no new calls)",
                 **({"multiprocess_mode": "max"} if _MULTIPROCESS else {}))
HANDOVERS = Counter("voicegate_handovers_total",
                    "Calls handed over to another instance at a drain deadline, by moment (quiet or forced)", ["moment"])
STORE_BACKLOG = Gauge("voicegate_store_backlog", "Transcript writes held in memory while the store refuses them",
                      **_GAUGE_MODE)
