"""`voicegate emulate` / `python -m emulators.cli`: serve the four provider emulators on one port.

    python -m emulators.cli --port 9100 --transcript "I'd like an appointment" --transcript "next tuesday at 3"

Then point the gateway at it: DEEPGRAM_BASE_URL=ws://127.0.0.1:9100, OPENAI_BASE_URL=http://127.0.0.1:9100/v1,
ELEVENLABS_BASE_URL=http://127.0.0.1:9100, TWILIO_API_BASE_URL=http://127.0.0.1:9100. Change
latencies and faults while it runs with `POST /_emulator/config`, read `GET /_emulator/log`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from emulators.config import ConfigError, DeepgramConfig, ElevenLabsConfig, EmulatorConfig, OpenAIConfig, TwilioConfig


def build_parser() -> argparse.ArgumentParser:
    d = EmulatorConfig()
    p = argparse.ArgumentParser(prog="voicegate emulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    p.add_argument("--config", type=Path, help="JSON file merged into the settings first (same shape as "
                                               "POST /_emulator/config); flags below override it")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])

    g = p.add_argument_group("latency")
    g.add_argument("--stt-final-delay", type=float, default=d.stt_final_delay, help="end of speech -> final (s)")
    g.add_argument("--llm-first-token", type=float, default=d.llm_first_token, help="request -> first token (s)")
    g.add_argument("--llm-token-rate", type=float, default=d.llm_token_rate, help="tokens per second")
    g.add_argument("--tts-first-byte", type=float, default=d.tts_first_byte, help="request/flush -> first audio (s)")
    g.add_argument("--tts-realtime-factor", type=float, default=d.tts_realtime_factor,
                   help="audio is streamed this many times faster than real time")

    g = p.add_argument_group("deepgram")
    g.add_argument("--deepgram-key", default="", help="the accepted key (default: any non-empty key)")
    g.add_argument("--deepgram-bad-key", action="append", default=[], help="a key refused with 401 (repeatable)")
    g.add_argument("--deepgram-script", type=Path, help="utterance transcripts, one per line (or a JSON list)")
    g.add_argument("--transcript", action="append", default=[], help="an utterance transcript (repeatable, in order)")
    g.add_argument("--default-transcript", default=DeepgramConfig.default_transcript)
    g.add_argument("--idle-timeout", type=float, default=DeepgramConfig.idle_timeout,
                   help="NET-0001 close after this long without audio or a message (s)")
    g.add_argument("--speech-threshold-dbfs", type=float, default=DeepgramConfig.speech_threshold_dbfs)
    g.add_argument("--deepgram-fault", choices=DeepgramConfig.FAULTS)
    g.add_argument("--deepgram-fault-count", type=int, default=0, help="0 = every connection")

    g = p.add_argument_group("openai")
    g.add_argument("--openai-key", default="")
    g.add_argument("--openai-bad-key", action="append", default=[])
    g.add_argument("--llm-reply", default=OpenAIConfig.default_reply, help="the default reply text")
    g.add_argument("--llm-script", type=Path, help="JSON list of replies: texts or {\"tool\", \"arguments\", \"text\"}")
    g.add_argument("--openai-fault", choices=OpenAIConfig.FAULTS)
    g.add_argument("--openai-fault-count", type=int, default=0)
    g.add_argument("--openai-retry-after", type=float, default=OpenAIConfig.retry_after,
                   help="retry-after of the error429 fault (s)")

    g = p.add_argument_group("elevenlabs")
    g.add_argument("--elevenlabs-key", default="")
    g.add_argument("--elevenlabs-bad-key", action="append", default=[])
    g.add_argument("--elevenlabs-fault", choices=ElevenLabsConfig.FAULTS)
    g.add_argument("--elevenlabs-fault-count", type=int, default=0)

    g = p.add_argument_group("twilio")
    g.add_argument("--twilio-account-sid", default="", help="the accepted AccountSid (default: any AC…)")
    g.add_argument("--twilio-auth-token", default="", help="the accepted token (default: any non-empty)")
    g.add_argument("--twilio-fault", choices=TwilioConfig.FAULTS)
    g.add_argument("--twilio-fault-count", type=int, default=0)
    return p


def _read_list(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = orjson.loads(text)
        if not isinstance(data, list):
            raise ConfigError(f"{path} must hold a JSON list")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    config = EmulatorConfig()
    if args.config is not None:
        config.merge(orjson.loads(args.config.read_bytes()))
    script = _read_list(args.deepgram_script) if args.deepgram_script else []
    script += args.transcript
    config.merge({
        "stt_final_delay": args.stt_final_delay, "llm_first_token": args.llm_first_token,
        "llm_token_rate": args.llm_token_rate, "tts_first_byte": args.tts_first_byte,
        "tts_realtime_factor": args.tts_realtime_factor,
        "deepgram": {"api_key": args.deepgram_key, "bad_keys": args.deepgram_bad_key,
                     "default_transcript": args.default_transcript, "idle_timeout": args.idle_timeout,
                     "speech_threshold_dbfs": args.speech_threshold_dbfs,
                     "fault": args.deepgram_fault, "fault_count": args.deepgram_fault_count,
                     **({"script": [str(s) for s in script]} if script else {})},
        "openai": {"api_key": args.openai_key, "bad_keys": args.openai_bad_key, "default_reply": args.llm_reply,
                   "fault": args.openai_fault, "fault_count": args.openai_fault_count,
                   "retry_after": args.openai_retry_after,
                   **({"script": _read_list(args.llm_script)} if args.llm_script else {})},
        "elevenlabs": {"api_key": args.elevenlabs_key, "bad_keys": args.elevenlabs_bad_key,
                       "fault": args.elevenlabs_fault, "fault_count": args.elevenlabs_fault_count},
        "twilio": {"account_sid": args.twilio_account_sid, "auth_token": args.twilio_auth_token,
                   "fault": args.twilio_fault, "fault_count": args.twilio_fault_count},
    })
    return config


async def serve(config: EmulatorConfig, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from emulators.app import build_app
    from emulators.server import bind, uvicorn_config

    app = build_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.emulator.stopping.set()  # release stalled requests now, not after the grace period
            super().handle_exit(sig, frame)

    sock = bind(host, port)
    server = Server(uvicorn_config(app, host, port, log_level))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        shown = f"[{host}]" if ":" in host else host
        print(f"emulators listening on http://{shown}:{sock.getsockname()[1]}", flush=True)
    try:
        await task  # uvicorn handles SIGINT/SIGTERM: it sets should_exit, shuts down, re-raises
    finally:
        app.emulator.stopping.set()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigError, OSError, orjson.JSONDecodeError) as exc:
        print(f"voicegate emulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, args.host, args.port, args.log_level))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
