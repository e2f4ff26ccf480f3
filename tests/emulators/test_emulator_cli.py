"""`python -m emulators.cli` starts, prints where it listens, serves, and stops on SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import pytest

from emulators.cli import build_parser, config_from_args

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def test_flags_become_config(tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_text("first line\n\nsecond line\n")
    settings = tmp_path / "emu.json"
    settings.write_text('{"llm_first_token": 0.05, "stt_final_delay": 0.5, "openai": {"models": ["m1"]}}')
    args = build_parser().parse_args([
        "--config", str(settings), "--deepgram-bad-key", "k1", "--deepgram-bad-key", "k2",
        "--deepgram-script", str(script), "--transcript", "third", "--llm-reply", "Hi!",
        "--stt-final-delay", "0.2", "--openai-fault", "error429", "--openai-fault-count", "2",
        "--openai-retry-after", "0.5", "--tts-realtime-factor", "1", "--twilio-auth-token", "tok"])
    cfg = config_from_args(args)
    assert cfg.deepgram.script == ["first line", "second line", "third"]
    assert cfg.openai.default_reply == "Hi!" and cfg.openai.fault == "error429" and cfg.openai.fault_count == 2
    assert cfg.stt_final_delay == 0.2 and cfg.openai.retry_after == 0.5 and cfg.tts_realtime_factor == 1.0
    assert cfg.twilio.auth_token == "tok" and cfg.deepgram.bad_keys == ["k1", "k2"]
    assert cfg.llm_first_token == 0.05 and cfg.openai.models == ["m1"]  # from the file, not overridden
    assert cfg.llm_token_rate == 50.0  # untouched default


async def test_cli_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulators.cli", "--port", "0", "--llm-reply", "Hello from the CLI.",
        "--llm-first-token", "0", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert line.startswith("emulators listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer sk-test"}) as http:
            assert (await http.get("/v1/models")).status_code == 200
            r = await http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
            assert r.json()["choices"][0]["message"]["content"] == "Hello from the CLI."
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_llm_rules_file_scripts_the_model_per_caller_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"delivery": "I can only book appointments.", '
                     '"tuesday": {"tool": "record_booking_details", "arguments": {"intent": "provide_date"}}}')
    cfg = config_from_args(build_parser().parse_args(["--llm-rules", str(rules), "--llm-reply", "Hi!"]))
    assert list(cfg.openai.rules) == ["delivery", "tuesday"]
    assert cfg.openai.rules["tuesday"]["arguments"] == {"intent": "provide_date"}
    assert cfg.openai.default_reply == "Hi!"
    rules.write_text('["not", "an", "object"]')
    with pytest.raises(ValueError):
        config_from_args(build_parser().parse_args(["--llm-rules", str(rules)]))
