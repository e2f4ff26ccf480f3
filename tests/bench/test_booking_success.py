"""`bench/booking_success.py` end to end: the real gateway on the offline default, 2 spoken booking calls.

No share is asserted beyond one booking in two (whisper on a shared CI machine is the same whisper, but
the callers' phrasings follow the day the test runs): the calls are placed and judged, every call has
the caller's lines, the stored turns and a verdict, and the JSON and Markdown are written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("booking_success", ROOT / "bench" / "booking_success.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_emulated_model_understands_what_the_words_still_say():
    understands = _bench().model_understands
    assert understands("Two thirty in the afternoon.", "230 in the afternoon.")
    assert understands("How about four thirty in the afternoon?", "How about for 30 in the afternoon?")  # sound-alike
    assert understands("Yes, that's right.", "Yes, that's right.")
    assert not understands("The sixteenth.", "The sex scene.")
    assert not understands("Tuesday at three p.m.", "Tuesday at 3.")  # "p.m." lost: not the same words


@pytest.mark.bench
@pytest.mark.timeout(420)
def test_two_spoken_booking_calls_through_the_real_server(tmp_path):
    out, md = tmp_path / "booking.json", tmp_path / "booking.md"
    proc = subprocess.run(
        [sys.executable, "bench/booking_success.py", "--modes", "clean", "--calls", "2", "-c", "2",
         "--voices", "piper-joe-1.0", "--json", str(out), "--md", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())["runs"]["clean"]
    assert run["calls"] == 2 and run["booked_right"] >= 1, [c["outcome"] for c in run["call_details"]]
    for call in run["call_details"]:
        assert call["error"] is None and call["caller_lines"] >= 2
        assert call["said"][0]["kind"] == "opening" and call["said"][0]["reacting_to"].startswith("Hi, thanks for calling")
        assert any(t["user_text"] for t in call["stored_turns"])  # what whisper wrote is kept
        if call["ok"]:
            assert call["booked"] and call["booked"][0].startswith(call["persona"]["target"].replace(" ", "T"))
            assert call["said"][-1]["kind"] == "yes"
    assert run["caller_lines_per_booking"] is not None and run["caller_lines_per_booking"] >= 2
    text = md.read_text()
    assert "| offline, clean audio | 2 |" in text
    assert text.count("### ") == 2 - run["booked_right"]  # every failed call's transcript
