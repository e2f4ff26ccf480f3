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

from emulators import precise_timers
from emulators.config import ConfigError, DeepgramConfig, ElevenLabsConfig, EmulatorConfig, OpenAIConfig, TwilioConfig


# Flags that set one config field: (flag, config path, type, help). Defaults come from
# EmulatorConfig; a flag not given leaves the field alone, so --config files are not overridden.
_FIELD_FLAGS: list[tuple[str, str, str, Any, str]] = [
    ("latency", "--stt-final-delay", "stt_final_delay", float, "end of speech (or Finalize) -> final Results (s)"),
    ("latency", "--llm-first-token", "llm_first_token", float, "request -> first token (s)"),
    ("latency", "--llm-token-rate", "llm_token_rate", float, "tokens per second after the first"),
    ("latency", "--tts-first-byte", "tts_first_byte", float, "request / flush -> first audio byte (s)"),
    ("latency", "--tts-realtime-factor", "tts_realtime_factor", float,
     "audio chunks follow each other this many times faster than real time"),
    ("deepgram", "--deepgram-key", "deepgram.api_key", str, "the accepted key (empty: any non-empty key)"),
    ("deepgram", "--default-transcript", "deepgram.default_transcript", str, "said when the script is empty"),
    ("deepgram", "--idle-timeout", "deepgram.idle_timeout", float,
     "NET-0001 close after this long without audio or a message (s)"),
    ("deepgram", "--speech-threshold-dbfs", "deepgram.speech_threshold_dbfs", float, "20 ms frames above are speech"),
    ("deepgram", "--deepgram-fault", "deepgram.fault", DeepgramConfig.FAULTS, "a fault for new connections"),
    ("deepgram", "--deepgram-fault-count", "deepgram.fault_count", int, "0 = every connection, N = the next N"),
    ("openai", "--openai-key", "openai.api_key", str, "the accepted key (empty: any non-empty key)"),
    ("openai", "--llm-reply", "openai.default_reply", str, "the reply when no rule or script entry applies"),
    ("openai", "--openai-fault", "openai.fault", OpenAIConfig.FAULTS, "a fault for new requests"),
    ("openai", "--openai-fault-count", "openai.fault_count", int, "0 = every request, N = the next N"),
    ("openai", "--openai-retry-after", "openai.retry_after", float, "retry-after of the error429 fault (s)"),
    ("elevenlabs", "--elevenlabs-key", "elevenlabs.api_key", str, "the accepted key (empty: any non-empty key)"),
    ("elevenlabs", "--elevenlabs-fault", "elevenlabs.fault", ElevenLabsConfig.FAULTS, "a fault for new requests"),
    ("elevenlabs", "--elevenlabs-fault-count", "elevenlabs.fault_count", int, "0 = always, N = the next N"),
    ("twilio", "--twilio-account-sid", "twilio.account_sid", str, "the accepted AccountSid (empty: any AC…)"),
    ("twilio", "--twilio-auth-token", "twilio.auth_token", str, "the accepted token (empty: any non-empty)"),
    ("twilio", "--twilio-fault", "twilio.fault", TwilioConfig.FAULTS, "a fault for new requests"),
    ("twilio", "--twilio-fault-count", "twilio.fault_count", int, "0 = always, N = the next N"),
]
_LIST_FLAGS = [  # repeatable flags that set a list field
    ("deepgram", "--deepgram-bad-key", "deepgram.bad_keys", "a key refused with 401 (repeatable)"),
    ("openai", "--openai-bad-key", "openai.bad_keys", "a key refused with 401 (repeatable)"),
    ("elevenlabs", "--elevenlabs-bad-key", "elevenlabs.bad_keys", "a key refused with 401 (repeatable)"),
]


def _get(config: EmulatorConfig, path: str) -> Any:
    obj: Any = config
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    d = EmulatorConfig()
    p = argparse.ArgumentParser(prog="voicegate emulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=9100, help="default 9100; 0 picks a free port")
    p.add_argument("--config", type=Path, help="JSON file merged into the settings first (the shape of "
                                               "POST /_emulator/config); flags given override it")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    groups = {name: p.add_argument_group(name) for name in ("latency", "deepgram", "openai", "elevenlabs", "twilio")}
    for group, flag, path, kind, text in _FIELD_FLAGS:
        default = _get(d, path)
        shown = f" (default {default!r})" if default not in (None, "") else ""
        if isinstance(kind, tuple):
            groups[group].add_argument(flag, choices=kind, default=argparse.SUPPRESS, help=text + shown)
        else:
            groups[group].add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text + shown)
    for group, flag, path, text in _LIST_FLAGS:
        groups[group].add_argument(flag, action="append", default=argparse.SUPPRESS, help=text)
    g = groups["deepgram"]
    g.add_argument("--deepgram-script", type=Path, help="utterance transcripts, one per line (or a JSON list)")
    g.add_argument("--transcript", action="append", default=[], help="an utterance transcript (repeatable, in order)")
    groups["openai"].add_argument("--llm-script", type=Path,
                                  help='JSON list of replies: texts or {"tool", "arguments", "text"}')
    groups["openai"].add_argument("--llm-rules", type=Path,
                                  help="JSON object: a piece of the last user message -> the reply to it (a text "
                                       'or {"tool", "arguments", "text"}); checked before the script, in order')
    return p


def _read_list(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = orjson.loads(text)
        if not isinstance(data, list):
            raise ConfigError(f"{path} must hold a JSON list")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    config = EmulatorConfig()
    if args.config is not None:
        config.merge(orjson.loads(args.config.read_bytes()))
    given = vars(args)
    changes: dict[str, Any] = {}
    for _, flag, path, _, _ in _FIELD_FLAGS:
        if _dest(flag) in given:
            _put(changes, path, given[_dest(flag)])
    for _, flag, path, _ in _LIST_FLAGS:
        if _dest(flag) in given:
            _put(changes, path, given[_dest(flag)])
    script = (_read_list(args.deepgram_script) if args.deepgram_script else []) + args.transcript
    if script:
        _put(changes, "deepgram.script", [str(s) for s in script])
    if args.llm_script:
        _put(changes, "openai.script", _read_list(args.llm_script))
    if args.llm_rules:
        rules = orjson.loads(args.llm_rules.read_bytes())
        if not isinstance(rules, dict):
            raise ConfigError(f"{args.llm_rules} must hold a JSON object")
        _put(changes, "openai.rules", rules)
    config.merge(changes)
    return config


async def serve(config: EmulatorConfig, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from emulators.app import build_app
    from emulators.server import bind, uvicorn_config
    from gateway.gc_pacer import GcPacer, freeze_heap

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
    # A benchmark charges the emulators' own pauses to the gateway (they stamp its hops), so they get
    # what the gateway has: the start-up heap frozen, and collections paced off the request path.
    freeze_heap()
    pacer = GcPacer()
    pacer.start()
    if server.started:
        shown = f"[{host}]" if ":" in host else host
        print(f"emulators listening on http://{shown}:{sock.getsockname()[1]}", flush=True)
    try:
        await task  # uvicorn handles SIGINT/SIGTERM: it sets should_exit, shuts down, re-raises
    finally:
        pacer.stop()
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
        # Timers on time (emulators/precise_timers.py): the emulated latencies are the configured ones.
        with asyncio.Runner(loop_factory=precise_timers.loop_factory()) as runner:
            runner.run(serve(config, args.host, args.port, args.log_level))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
