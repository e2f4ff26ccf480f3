"""Settings of the provider emulators, the fault switches, and the log of what they saw.

One `EmulatorConfig` is held by the app and mutated at runtime through `POST /_emulator/config`
(a JSON merge: `{"openai": {"fault": "error429", "fault_count": 1}, "stt_final_delay": 0.1}`).
Handlers read it at the start of each request or connection, so a change applies to the next one.

Fault bookkeeping: each provider has `fault` (a name from its `FAULTS`, or None) and
`fault_count`. `fault_count == 0` means "every request/connection from now on"; N > 0 means "the
next N", after which the fault clears itself. `take_fault()` is called once per request or
connection, so the count is consumed exactly where the fault would show.

`EmulatorLog` keeps one bounded deque of records per provider. A record is a plain dict appended
when a request or connection starts and updated in place while it runs (all on one event loop),
so `GET /_emulator/log` always shows the live state. Times are `time.time()` seconds, comparable
across processes on one machine.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A config merge named an unknown field or gave a value of the wrong type."""


@dataclass
class ProviderConfig:
    FAULTS: ClassVar[tuple[str, ...]] = ()

    fault: str | None = None
    fault_count: int = 0  # 0 = always; N = only the next N requests/connections

    def take_fault(self) -> str | None:
        """The fault to apply to the request/connection starting now, consuming one count."""
        fault = self.fault
        if fault is not None and self.fault_count > 0:
            self.fault_count -= 1
            if self.fault_count == 0:
                self.fault = None
        return fault

    def clear_fault(self) -> None:
        self.fault = None
        self.fault_count = 0

    def key_accepted(self, key: str | None, expected: str, bad_keys: list[str]) -> bool:
        if not key or key in bad_keys:
            return False
        return not expected or key == expected


@dataclass
class DeepgramConfig(ProviderConfig):
    FAULTS: ClassVar[tuple[str, ...]] = ("refuse", "drop", "stall", "error5xx", "flap")

    api_key: str = ""  # the accepted key; "" accepts any non-empty key
    bad_keys: list[str] = field(default_factory=list)  # refused with 401 at the handshake
    script: list[str] = field(default_factory=list)  # utterance texts, taken in order per connection
    default_transcript: str = "hello"  # used when the script is empty (or exhausted and not repeat_last)
    repeat_last: bool = True  # an exhausted script repeats its last entry
    idle_timeout: float = 10.0  # Deepgram closes with NET-0001 after 10 s without audio or a message
    speech_threshold_dbfs: float = -40.0  # 20 ms frames louder than this are speech
    onset_ms: int = 60  # this much continuous speech starts an utterance (a click does not)
    # Deepgram's own default endpointing is 10 ms, but an energy detector with a 10 ms hangover
    # splits words at every stop consonant; 300 ms is what voice agents usually request.
    default_endpointing_ms: int = 300
    interim_interval: float = 0.3  # seconds of utterance audio between interim Results
    interim_words_per_second: float = 2.5  # how fast the interim prefix grows (speech is ~2.5 words/s)
    drop_after: float = 1.0  # fault "drop": seconds after speech onset before the socket is cut
    finalize_empty_reply: bool = True  # Finalize with nothing pending answers an empty from_finalize final
    # Fault "flap": each connection is cut (no close frame) this many seconds after it opened, whatever
    # it is doing; a list is taken in turn, one entry per connection, so cuts land at different points.
    flap_after: list[float] = field(default_factory=lambda: [3.0])
    # Transcripts by the audio itself, as a real engine's are: text -> the hashes of its voiced 20 ms
    # frames (`emulators.deepgram.voiceprint`). Audio with known frames is transcribed as the words of
    # the frames heard, on any connection: a replay gets the same words, a replay of part of an
    # utterance only the words of that part. Audio with no known frame takes the script as before.
    voiceprints: dict[str, list[str]] = field(default_factory=dict)

    _flaps: int = field(default=0, repr=False)  # connections cut by "flap" so far: the next flap_after entry

    def next_flap_after(self) -> float:
        delays = self.flap_after or [3.0]
        delay = delays[self._flaps % len(delays)]
        self._flaps += 1
        return float(delay)


@dataclass
class OpenAIConfig(ProviderConfig):
    FAULTS: ClassVar[tuple[str, ...]] = ("error500", "error429", "midstream", "stall", "drop")

    api_key: str = ""
    bad_keys: list[str] = field(default_factory=list)
    # Entries are reply texts or tool calls {"tool": name, "arguments": {...}, "text": optional
    # content streamed before the call}. Taken in order per server; then default_reply.
    script: list[Any] = field(default_factory=list)
    # Case-insensitive substring of the last user message -> entry; checked before the script.
    rules: dict[str, Any] = field(default_factory=dict)
    default_reply: str = "Sure, I can help with that."
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"])
    retry_after: float = 1.0  # fault "error429": the retry-after / retry-after-ms headers
    fault_after_tokens: int = 3  # faults "midstream" and "drop": tokens sent before the failure
    stall_seconds: float = 300.0  # fault "stall": the longest a request is held

    _cursor: int = field(default=0, repr=False)

    def next_scripted(self) -> Any | None:
        if self._cursor < len(self.script):
            entry = self.script[self._cursor]
            self._cursor += 1
            return entry
        return None


@dataclass
class ElevenLabsConfig(ProviderConfig):
    FAULTS: ClassVar[tuple[str, ...]] = ("drop", "stall", "error5xx", "flap")

    api_key: str = ""
    bad_keys: list[str] = field(default_factory=list)
    chunk_ms: int = 100  # audio per streamed chunk / WebSocket audio message
    flap_after: float = 3.0  # fault "flap": a WebSocket is cut (no close frame) this long after it opened
    inactivity_timeout: float = 20.0  # stream-input default when the query has none (ElevenLabs: 20 s)
    stall_seconds: float = 300.0


@dataclass
class TwilioConfig(ProviderConfig):
    FAULTS: ClassVar[tuple[str, ...]] = ("error500",)

    account_sid: str = ""  # the accepted Basic-auth user; "" accepts any AC… / SK… sid
    auth_token: str = ""  # the accepted password; "" accepts any non-empty token


@dataclass
class EmulatorConfig:
    # --- latency flags (seconds) ---
    stt_final_delay: float = 0.15  # end of speech (or Finalize) -> final Results
    llm_first_token: float = 0.3  # request -> first content token
    llm_token_rate: float = 50.0  # tokens per second after the first
    tts_first_byte: float = 0.15  # request / flush -> first audio byte
    tts_realtime_factor: float = 4.0  # audio chunks follow each other this much faster than real time

    log_limit: int = 10_000  # records kept per provider; benchmarks run thousands of calls

    deepgram: DeepgramConfig = field(default_factory=DeepgramConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    elevenlabs: ElevenLabsConfig = field(default_factory=ElevenLabsConfig)
    twilio: TwilioConfig = field(default_factory=TwilioConfig)

    def providers(self) -> tuple[ProviderConfig, ...]:
        return (self.deepgram, self.openai, self.elevenlabs, self.twilio)

    def merge(self, data: dict[str, Any]) -> None:
        """Apply a JSON merge. Validates everything before changing anything."""
        _merge(self, data, dry_run=True, where="")
        _merge(self, data, dry_run=False, where="")

    def clear_faults(self) -> None:
        for p in self.providers():
            p.clear_fault()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def _public_fields(obj: Any) -> dict[str, Any]:
    return {f.name: f for f in fields(obj) if not f.name.startswith("_")}


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _public_fields(obj):
        value = getattr(obj, name)
        out[name] = _to_dict(value) if is_dataclass(value) else value
    return out


def _merge(obj: Any, data: Any, *, dry_run: bool, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be an object")
    known = _public_fields(obj)
    for name, value in data.items():
        path = f"{where}{name}"
        if name not in known:
            raise ConfigError(f"unknown setting {path!r}")
        current = getattr(obj, name)
        if is_dataclass(current):
            _merge(current, value, dry_run=dry_run, where=path + ".")
            continue
        value = _checked(path, name, current, value, obj)
        if not dry_run:
            setattr(obj, name, value)
            if name == "script" and isinstance(obj, OpenAIConfig):
                obj._cursor = 0


def _checked(path: str, name: str, current: Any, value: Any, obj: Any) -> Any:
    if isinstance(obj, OpenAIConfig) and name in ("script", "rules"):
        if not isinstance(value, type(current)):
            raise ConfigError(f"{path} must be a {type(current).__name__}, not {value!r}")
        for where, entry in value.items() if isinstance(value, dict) else enumerate(value):
            _check_reply(f"{path}[{where!r}]", entry)
        return value
    if name == "fault":
        if value is not None and value not in obj.FAULTS:
            raise ConfigError(f"{path} must be one of {', '.join(obj.FAULTS)} or null, not {value!r}")
        return value
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(current, int) and not float(value).is_integer():
            ok = False
        if ok:
            value = type(current)(value)
    else:
        ok = isinstance(value, type(current))
    if not ok:
        raise ConfigError(f"{path} must be a {type(current).__name__}, not {value!r}")
    if isinstance(current, (int, float)) and not isinstance(current, bool) and value < 0 and not name.endswith("_dbfs"):
        raise ConfigError(f"{path} must not be negative")
    return value


REPLY_KEYS = frozenset({"text", "tool", "arguments"})


def _check_reply(path: str, entry: Any) -> None:
    """A scripted reply is a text or {"tool": name, "arguments": object or JSON text, "text": lead-in}:
    a typo is a startup error, not a model that silently says the default reply."""
    if isinstance(entry, str):
        return
    if not isinstance(entry, dict) or not entry or set(entry) - REPLY_KEYS:
        raise ConfigError(f"{path} must be a text or an object with {', '.join(sorted(REPLY_KEYS))}, not {entry!r}")
    if not isinstance(entry.get("text", ""), str) or not isinstance(entry.get("tool", ""), str):
        raise ConfigError(f"{path}: text and tool must be strings")
    if not isinstance(entry.get("arguments", {}), (dict, str)):
        raise ConfigError(f"{path}: arguments must be an object or its JSON text")


class EmulatorLog:
    """Everything the emulators saw, one bounded deque of dict records per provider."""

    PROVIDERS = ("deepgram", "openai", "elevenlabs", "twilio")

    def __init__(self, limit: int = 10_000) -> None:
        self._ids = itertools.count(1)
        self.deepgram: deque[dict[str, Any]] = deque(maxlen=limit)
        self.openai: deque[dict[str, Any]] = deque(maxlen=limit)
        self.elevenlabs: deque[dict[str, Any]] = deque(maxlen=limit)
        self.twilio: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, provider: str, record: dict[str, Any]) -> dict[str, Any]:
        record["id"] = next(self._ids)
        getattr(self, provider).append(record)
        return record

    def clear(self) -> None:
        for name in self.PROVIDERS:
            getattr(self, name).clear()

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {name: list(getattr(self, name)) for name in self.PROVIDERS}
