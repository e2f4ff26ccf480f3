"""`voicegate bench --spawn` end to end: emulators + a real gateway, 2 calls x 2 turns.

No timing assertions (CI machines are shared and slow): the report has its fields, no call failed,
the JSON is written. The pure parts (percentiles, histogram deltas, the providers' share) are
checked exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen import bench, conversations

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.bench
@pytest.mark.timeout(240)
def test_bench_spawn_two_calls_two_turns(tmp_path, cloud_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "--spawn", "--calls", "2", "-c", "2", "--turns", "2",
         "--procs", "2", "--warmup", "0", "--voice", "synthetic", "--max-call-s", "60", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the shared CI machine was the limit
    report = json.loads(out.read_text())
    assert report["calls"]["placed"] == 2 and report["calls"]["failed"] == 0, report["calls"]
    assert report["turns"]["spoken"] == 4 and report["turns"]["answered"] >= 3, report["turns"]
    for section, keys in {
        "voice_to_voice_ms": ("p50", "p95", "p99"),
        "overhead_caller_ms": ("p50", "p95", "p99", "subtracted_ms", "end_of_speech_wait_ms"),
        "overhead_gateway_ms": ("p50", "p99", "n"),
        "barge_in_clear_ms": ("p50", "p95", "barge_ins"),
        "underruns": ("count", "reply_frames", "pct_frames", "events"),
        "gateway": ("cpu_pct_load", "rss_idle_mb", "rss_peak_mb", "rss_per_call_kb"),
        "loadgen": ("procs", "cpu_pct", "loop_lag_ms", "clock_slip_ms_total", "max_send_lag_ms"),
        "verdict": ("loadgen_limited", "reasons", "contended"),
    }.items():
        assert report[section] is not None, section
        for key in keys:
            assert key in report[section], (section, key)
    assert report["voice_to_voice_ms"]["n"] >= 3
    assert report["barge_in_clear_ms"]["barge_ins"] == 2
    assert report["overhead_gateway_ms"]["n"] >= 3  # the gateway's own histogram moved
    assert report["loadgen"]["procs"] == 2
    assert len(report["underruns"]["events"]) == min(report["underruns"]["count"], bench.UNDERRUN_EVENTS_KEPT)
    assert report["gateway"]["rss_peak_mb"] > 0
    # One emulator process per provider: each role's log is read where it was served, so every
    # answered turn is still followed through the gateway's four hops.
    assert {"openai", "elevenlabs"} <= set(report["emulators"]), report["emulators"]
    assert len({report["emulators"]["pid"], report["emulators"]["openai"]["pid"],
                report["emulators"]["elevenlabs"]["pid"]}) == 3
    wire = report["overhead_wire_ms"]
    assert wire["turns_matched"] >= 3, wire
    # The inbound hop found for the turns Deepgram's endpointing ended, and the rig's lateness beside
    # the gateway's hops accounts for the caller-side overhead of each.
    assert wire["total"]["n"] >= 3 and wire["inbound"]["n"] == wire["total"]["n"], wire
    assert wire["caller_overhead"]["n"] == wire["total"]["n"] and wire["residual_max_ms"] < 0.01, wire
    assert "voice-to-voice ms" in proc.stdout and "verdict" in proc.stdout.lower()


def test_usage_errors_exit_2(capsys):
    assert bench.main([]) == 2  # neither --url nor --spawn
    assert bench.main(["--spawn", "--turns", "9"]) == 2
    assert bench.main(["--url", "ws://x", "--offline"]) == 2


def test_percentile_interpolates_like_numpy():
    assert bench.percentile([], 0.5) is None
    assert bench.percentile([5.0], 0.99) == 5.0
    assert bench.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert bench.percentile(list(range(101)), 0.95) == pytest.approx(95.0)


def test_histogram_quantile_uses_bucket_deltas():
    before = {0.001: 10, 0.005: 10, 0.01: 10, float("inf"): 10}
    after = {0.001: 10, 0.005: 60, 0.01: 110, float("inf"): 110}  # 100 new: 50 in (1,5] ms, 50 in (5,10] ms
    p50, n = bench.histogram_quantile(before, after, 0.5)
    assert n == 100 and p50 == pytest.approx(0.005)
    p99, _ = bench.histogram_quantile(before, after, 0.99)
    assert p99 == pytest.approx(0.005 + 0.005 * 49 / 50)
    assert bench.histogram_quantile(after, after, 0.5) == (None, 0)
    # Past the last finite bucket the answer is that bucket's bound, as in Prometheus.
    assert bench.histogram_quantile({}, {0.01: 0, float("inf"): 4}, 0.5)[0] == 0.01


def test_parse_histogram_reads_the_gateway_exposition():
    text = ('# HELP voicegate_gateway_overhead_seconds x\n# TYPE voicegate_gateway_overhead_seconds histogram\n'
            'voicegate_gateway_overhead_seconds_bucket{le="0.001"} 3.0\n'
            'voicegate_gateway_overhead_seconds_bucket{le="+Inf"} 4.0\n'
            'voicegate_gateway_overhead_seconds_count 4.0\nvoicegate_gateway_overhead_seconds_sum 0.01\n')
    assert bench.parse_histogram(text, "voicegate_gateway_overhead_seconds") == {0.001: 3.0, float("inf"): 4.0}


def test_gc_pause_summary_counts_the_collections_between_scrapes():
    before = {0.001: 2, 0.005: 4, 0.01: 4, float("inf"): 4}
    after = {0.001: 3, 0.005: 9, 0.01: 10, float("inf"): 10}  # 6 new: 1 under 1 ms, 4 in (1,5], 1 in (5,10]
    summary = bench.gc_pause_summary(before, after)
    assert summary["n"] == 6 and summary["longest_under_ms"] == 10.0
    assert 1.0 < summary["p50_ms"] <= 5.0
    assert bench.gc_pause_summary(after, after)["n"] == 0
    assert bench.gc_pause_summary({}, {}) is None


def test_provider_share_counts_tokens_to_the_first_phrase():
    share = bench.provider_share_ms(0.15, 0.3, 50.0, 0.15, "Certainly I can help you with that. Which day works?")
    assert share["stt_final_ms"] == pytest.approx(150) and share["tts_first_byte_ms"] == pytest.approx(150)
    # "Certainly" " I" " can" " help" " you" " with" " that" "." " Which": no clause boundary, so the
    # chunker speaks the first sentence once the token after its full stop arrives (index 8).
    assert share["llm_first_phrase_ms"] == pytest.approx(300 + 8 * 20)
    one = bench.provider_share_ms(0, 0.3, 50.0, 0, "Okay.")  # no boundary: the stream's end flushes it
    assert one["llm_first_phrase_ms"] == pytest.approx(300 + 1 * 20)


def test_trim_silence_keeps_the_voiced_frames():
    from audio import mulaw

    speech = bench.synthetic_speech(0.5)
    padded = mulaw.silence(800) + speech[: 160 * 25] + mulaw.silence(1600)
    trimmed = bench.trim_silence(padded)
    assert len(trimmed) % 160 == 0 and len(trimmed) == 160 * 25


def test_sentence_rule_waits_for_the_token_after_the_full_stop():
    from emulators.openai import tokenize

    tokens = tokenize("Sure, I can help you with that. Which day works?")
    # "Sure" "," " I" " can" " help" " you" " with" " that" "." " Which" ...: Pipecat's sentence
    # aggregation emits the first sentence when " Which" (index 9) arrives.
    assert bench.first_phrase_token(tokens, "sentence") == 9
    assert bench.first_phrase_token(tokenize("Okay."), "sentence") == 1  # the stream's end
    with pytest.raises(ValueError):
        bench.first_phrase_token(tokens, "paragraph")


@pytest.mark.parametrize("concurrency", [2, 5, 25, 100])
def test_call_starts_spread_over_the_frame_clock(concurrency):
    # Independent callers' 20 ms frames arrive at unrelated phases; the generator must not put
    # every call's frame into one or two bursts per frame period.
    offsets = bench.call_offsets(concurrency, bench.BenchOptions(concurrency=concurrency).ramp)
    assert len(offsets) == concurrency
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    phases = sorted((o % bench.FRAME_S) / bench.FRAME_S for o in offsets)
    gaps = [b - a for a, b in zip(phases, phases[1:])] + [1.0 - phases[-1] + phases[0]]
    # Evenly spread: no empty stretch of the frame period wider than a few lanes' share.
    assert max(gaps) <= 3.0 / concurrency + 1e-9
    assert len({round(p, 6) for p in phases}) == concurrency


def test_call_offsets_single_call_starts_at_once():
    assert bench.call_offsets(1, 0.0) == [0.0]
    assert bench.call_offsets(0, 1.0) == []


def test_the_off_script_conversation_runs_whole_with_its_rules(tmp_path):
    opts = bench.options_from_args(["--spawn", "--conversation", "off-script"])
    assert opts.turns == len(conversations.OFF_SCRIPT)  # every line unless asked
    assert bench.options_from_args(["--spawn"]).turns == 3  # the booking conversation as before
    assert bench.main(["--spawn", "--conversation", "off-script", "--turns", str(len(conversations.OFF_SCRIPT) + 1)]) == 2
    kinds = [kind for _, kind in conversations.OFF_SCRIPT]
    assert sum(kind != "script" for kind in kinds) * 3 >= len(kinds)  # at least a third off script
    cmd = bench.emulator_command(9100, opts, tmp_path)
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--transcript"] == list(conversations.lines("off-script"))
    rules = json.loads(Path(cmd[cmd.index("--llm-rules") + 1]).read_text())
    assert set(rules) == set(conversations.off_script_rules())
    assert "--llm-rules" not in bench.emulator_command(9100, bench.options_from_args(["--spawn"]), tmp_path)


def test_reply_kinds_come_from_the_gateway_store_matched_by_the_words(tmp_path):
    from dialog.store import Store

    db = str(tmp_path / "voicegate.db")
    with Store(db) as store:
        for turn_id, (text, kind) in enumerate([("", "quick"), ("Hi, I need to change my delivery address.", "llm"),
                                                ("Sometime around the middle of next week.", "llm_tool")]):
            store.add_turn("CA1", {"turn_id": turn_id, "user_text": text, "agent_text": "x",
                                   "timings": {"voice_to_voice_ms": 1.0, "reply_kind": kind}, "at": 1.0})
    turns = [{"text": "Hi, I need to change my delivery address.", "latency_ms": 900.0},
             {"text": "Oh okay. Yes, I would like to book an appointment then.", "latency_ms": None},
             {"text": "Sometime around the middle of next week.", "latency_ms": 800.0}]
    records = [{"call_sid": "CA1", "turns": turns}, {"call_sid": "CA-unknown", "turns": [dict(turns[0])]}]
    bench.add_reply_kinds(db, records)
    assert [t.get("reply_kind") for t in turns] == ["llm", None, "llm_tool"]
    assert "reply_kind" not in records[1]["turns"][0]
    by_kind = bench.latency_by(records, lambda t: t.get("reply_kind"))
    assert {k: v["n"] for k, v in by_kind.items()} == {"llm": 1, "llm_tool": 1}
    line_kinds = conversations.kinds("off-script")
    by_line = bench.latency_by(records, lambda t: line_kinds.get(t["text"]))
    assert by_line["answer"]["n"] == 2 and by_line["tool"]["p50"] == 800.0
