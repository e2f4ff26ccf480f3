"""Configuration, read once from the environment into a frozen object that is passed in explicitly.

Every limit the gateway enforces is a named field here with a comment on why its default is what it
is. Keys are stripped of stray whitespace (a pasted key with a trailing newline is the most common
cause of a silent 401). A malformed value is a `ConfigError` at startup, naming the variable but
never echoing a secret.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from typing import Mapping
from urllib.parse import urlsplit

from providers.languages import available, parse_languages
from providers.local_models import WHISPER_MODELS


class ConfigError(ValueError):
    """An environment variable has a value the gateway cannot use."""


LATENCY_MODES = ("disabled", "shadow", "enabled")
# A drain longer than an hour is not a deploy any platform waits for; a typo (seconds read as ms) is.
MAX_DRAIN_SECONDS = 3600.0

# Names whose values are secrets: never logged, never echoed in errors or routes.
SECRET_FIELDS = frozenset(
    {"deepgram_api_key", "openai_api_key", "elevenlabs_api_key", "twilio_auth_token", "dashboard_token"}
)


@dataclass(frozen=True)
class Settings:
    # --- network surface ---
    port: int = 8000
    host: str = "0.0.0.0"
    # PUBLIC_URL: the URL Twilio reaches us at (https://voice.example.com); the TwiML's wss:// stream URL
    # and the signature checks use it. Empty: each request's own (its Host header, with the port; behind
    # trusted proxies their X-Forwarded-Proto/-Host): gateway/public_urls.py.
    public_url: str = ""
    workers: int = 1  # uvicorn worker processes (WEB_CONCURRENCY)

    # --- providers (empty key = engine not configured) ---
    deepgram_api_key: str = ""
    deepgram_base_url: str = ""  # e.g. ws://127.0.0.1:9001 for the emulator; empty = Deepgram's cloud
    deepgram_model: str = "nova-3"
    openai_api_key: str = ""
    openai_base_url: str = ""  # any OpenAI-compatible server (vLLM, Ollama, llama.cpp)
    openai_model: str = "gpt-4o-mini"
    openai_fallback_model: str = ""
    elevenlabs_api_key: str = ""
    elevenlabs_base_url: str = ""
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    # The ElevenLabs model for a call in another language than English when ELEVENLABS_MODEL speaks
    # English only (eleven_flash_v2, eleven_turbo_v2...). Flash v2.5: 32 languages, `language_code`
    # honoured, the same ~75 ms first byte as the English Flash.
    elevenlabs_multilingual_model: str = "eleven_flash_v2_5"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base_url: str = ""
    twilio_validate_signatures: bool = True  # only meaningful when twilio_auth_token is set
    twilio_caller_id: str = ""  # the Twilio number outbound calls come from, when the request names none
    transfer_number: str = ""  # E.164: when the dialog gives up, transfer the caller here instead of hanging up

    # --- state ---
    redis_url: str = ""
    voicegate_db: str = "voicegate.db"
    dashboard_token: str = ""

    # --- languages and knowledge ---
    # LANGUAGES: the languages calls may be held in (en, es, fr, de, it), the first the default. One
    # (the default "en") keeps Deepgram on its monolingual model; more turn on its multilingual mode and
    # language switching, on the cloud path only (providers/languages.py).
    languages: str = "en"
    # Words a turn must have in another supported language before the call switches to it (one on the
    # caller's first turn): "Okay" or "Sí" alone is said by callers of any language (dialog.languages).
    language_switch_min_words: int = 2
    # KNOWLEDGE_DIR: a folder of Markdown or text files with the business's facts; callers' questions
    # are answered from them (dialog.knowledge). Empty: no knowledge base.
    knowledge_dir: str = ""
    # A long call's LLM prompt (dialog/summary.py): this much of the latest conversation verbatim (~500
    # tokens: the last three or four exchanges), and everything older in a summary of at most
    # HISTORY_SUMMARY_CHARS (~170 tokens), so the sixtieth turn's first token is as fast as the first's.
    history_recent_chars: int = 2000
    history_summary_chars: int = 700

    # --- behaviour ---
    latency_optimization_mode: str = "enabled"
    local_engines: bool = True  # load whisper + piper (the embedded default and the last fallback)
    timezone: str = "America/New_York"  # the business's timezone, for "tomorrow at 3"
    log_level: str = "INFO"

    # --- limits ---
    max_concurrent_calls: int = 200  # above this a call is answered busy rather than degraded for everyone
    max_call_seconds: int = 1800  # 30 min: a booking call that runs longer is stuck, not busy
    idle_timeout_seconds: float = 15.0  # Twilio sends media every 20 ms, so 15 s without any is a dead peer
    max_message_bytes: int = 64 * 1024  # a 20 ms frame is ~300 bytes of JSON; 64 KiB allows 4 s frames
    max_media_payload_bytes: int = 32_000  # decoded mu-law per message: 4 s at 8 kHz
    max_utterance_seconds: float = 30.0  # then the utterance is cut and processed (issue 2)
    end_of_speech_ms: int = 500  # VAD silence that ends a caller turn
    outbound_lead_ms: int = 300  # audio buffered ahead at Twilio: small enough for a quick barge-in
    max_reply_tokens: int = 150  # replies are spoken: keep them short
    max_caller_text_chars: int = 2000  # ~30 s of speech is ~500 chars; anything longer is garbage
    http_rate_per_ip: float = 20.0  # requests/s per client IP (burst 3x): stops floods, not dashboards
    ws_rate_per_ip: float = 20.0  # WebSocket upgrades/s per IP (burst 5x): Twilio opens many streams from few IPs
    cors_origins: str = ""  # comma-separated origins allowed to call the HTTP API from a browser; empty = none
    # Proxies in front of the gateway whose X-Forwarded-For (per-IP limits) and, without PUBLIC_URL,
    # X-Forwarded-Proto / X-Forwarded-Host (the URLs in the TwiML, signatures) are trusted. 0: none, a
    # client could send those headers itself.
    trusted_proxy_hops: int = 0
    breaker_failure_threshold: int = 3  # consecutive failures that open a provider's circuit breaker
    breaker_reset_seconds: float = 15.0  # how long an open breaker sends calls straight to the fallback
    # A provider socket (Deepgram, ElevenLabs) that drops reconnects; more than this many reconnects
    # of one call within the window below and the call moves to the next engine of its chain for the
    # rest of the call. A healthy socket lives for the whole call: three drops in 30 s is a provider
    # flapping (behind a bad load balancer), and each reconnect costs the caller a replay or a gap.
    provider_reconnects_per_window: int = 3
    # The window for the bound above, and for the breaker's count of connection drops (3 drops in it,
    # across all calls, send new calls straight to the fallback until a trial connection holds).
    provider_reconnect_window_seconds: float = 30.0
    # On SIGTERM (a deploy) calls in progress go on this long before each is handed over to another
    # instance (context in Redis, stream closed, Twilio's <Redirect> resumes it there). Two minutes
    # covers a typical booking call; the platform's kill timeout (Kubernetes'
    # terminationGracePeriodSeconds, Railway's drainingSeconds) must be longer. At most 3600.
    drain_seconds: float = 120.0
    # At the drain deadline a call is handed over at its next quiet moment (reply played, caller not
    # speaking), so nobody is cut off mid-sentence; past this long it is handed over regardless.
    handover_wait_seconds: float = 10.0
    stt_workers: int = 2  # threads for local whisper: one per core
    # The offline STT model (WHISPER_MODEL): "tiny.en" (default) or "base" (extra `whisper-base`);
    # docs/understanding.md ("Offline speech recognition") has both measured on the STT corpus.
    whisper_model: str = "tiny.en"
    tts_workers: int = 2
    # --- turn-taking ---
    # MODEL_VAD: a speech model (Silero, from the `local` extra) confirms each onset and end of speech
    # the energy VAD hears, so noise, music and the agent's own echo neither interrupt nor start a turn.
    model_vad: bool = True
    # BACKCHANNELS: an "uh-huh" or "yeah" while the agent talks is recorded but does not cancel its
    # reply; off, it counts as an interruption like any words.
    backchannels: bool = True

    @property
    def public_host(self) -> str:
        """PUBLIC_URL's host[:port]; "" when unset (then each request's own: gateway/public_urls.py)."""
        return urlsplit(self.public_url).netloc

    @property
    def media_stream_url(self) -> str:
        """PUBLIC_URL's wss:// stream URL, the one Twilio connects to and signs; "" when unset."""
        return f"wss://{self.public_host}/twilio/media" if self.public_url else ""

    @property
    def deepgram_enabled(self) -> bool:
        return bool(self.deepgram_api_key)

    @property
    def openai_enabled(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)

    @property
    def elevenlabs_enabled(self) -> bool:
        return bool(self.elevenlabs_api_key)

    @property
    def language_codes(self) -> tuple[str, ...]:
        """LANGUAGES as configured (validated at startup)."""
        return parse_languages(self.languages)

    @property
    def call_languages(self) -> tuple[str, ...]:
        """The languages calls may actually be held in with the engines configured: LANGUAGES on the
        cloud path, English offline (providers/languages.py; `languages_note` says why)."""
        return available(self.language_codes, deepgram=self.deepgram_enabled, llm=self.openai_enabled,
                         elevenlabs=self.elevenlabs_enabled)[0]

    @property
    def languages_note(self) -> str:
        return available(self.language_codes, deepgram=self.deepgram_enabled, llm=self.openai_enabled,
                         elevenlabs=self.elevenlabs_enabled)[1]

    @property
    def twilio_rest_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    def secrets(self) -> tuple[str, ...]:
        """The configured secret values, for scrubbing them out of anything written."""
        return tuple(str(getattr(self, name)) for name in sorted(SECRET_FIELDS) if getattr(self, name))

    def redacted(self) -> dict[str, object]:
        """The settings as a dict safe to log: secrets become 'set'/'unset'."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("set" if value else "unset") if f.name in SECRET_FIELDS else value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            names = _ENV_NAMES.get(f.name, (f.name.upper(),))
            raw = next((env[n] for n in names if n in env), None)
            if raw is None:
                continue
            values[f.name] = _parse(f.name, names[0], raw, type(getattr(cls, f.name)))
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings._validate()
        return settings

    def _validate(self) -> None:
        if self.latency_optimization_mode not in LATENCY_MODES:
            raise ConfigError(
                f"LATENCY_OPTIMIZATION_MODE must be one of {', '.join(LATENCY_MODES)}, "
                f"not {self.latency_optimization_mode!r}"
            )
        try:
            parse_languages(self.languages)
        except ValueError as exc:
            raise ConfigError(f"LANGUAGES: {exc}") from None
        if self.history_recent_chars < 200 or self.history_summary_chars < 100:
            raise ConfigError("HISTORY_RECENT_CHARS must be at least 200 and HISTORY_SUMMARY_CHARS at least 100")
        if self.language_switch_min_words < 1:
            raise ConfigError("LANGUAGE_SWITCH_MIN_WORDS must be at least 1")
        if self.whisper_model not in WHISPER_MODELS:
            raise ConfigError(f"WHISPER_MODEL must be one of {', '.join(WHISPER_MODELS)}, not {self.whisper_model!r}")
        parts = urlsplit(self.public_url)
        if self.public_url and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ConfigError(f"PUBLIC_URL must be an http(s) URL such as https://voice.example.com, not {self.public_url!r}")
        if self.trusted_proxy_hops < 0:
            raise ConfigError("TRUSTED_PROXY_HOPS must not be negative")
        for name in ("port", "max_concurrent_calls", "max_call_seconds", "workers", "end_of_speech_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be positive")
        if not 0 <= self.drain_seconds <= MAX_DRAIN_SECONDS:
            raise ConfigError(f"DRAIN_SECONDS must be between 0 and {MAX_DRAIN_SECONDS:g}")
        if self.provider_reconnects_per_window < 0 or self.provider_reconnect_window_seconds <= 0:
            raise ConfigError("PROVIDER_RECONNECTS_PER_WINDOW must be >= 0 and PROVIDER_RECONNECT_WINDOW_SECONDS > 0")
        if self.handover_wait_seconds < 0:
            raise ConfigError("HANDOVER_WAIT_SECONDS must not be negative")
        if not 1 <= self.port <= 65535:
            raise ConfigError("PORT must be between 1 and 65535")
        for name in ("deepgram_base_url", "openai_base_url", "elevenlabs_base_url", "twilio_api_base_url", "redis_url"):
            value = getattr(self, name)
            if value and not urlsplit(value).scheme:
                raise ConfigError(f"{name.upper()} must be a URL with a scheme, not {value!r}")


# Environment names that differ from the field name upper-cased.
_ENV_NAMES: dict[str, tuple[str, ...]] = {
    "workers": ("WEB_CONCURRENCY",),
    "local_engines": ("VOICEGATE_LOCAL_ENGINES",),
    "timezone": ("VOICEGATE_TIMEZONE",),
    "host": ("HOST",),
    "twilio_validate_signatures": ("TWILIO_VALIDATE_SIGNATURES",),
    "idle_timeout_seconds": ("IDLE_TIMEOUT_SECONDS",),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(field_name: str, env_name: str, raw: str, kind: type) -> object:
    value = raw.strip()  # stray whitespace around pasted keys is stripped, not an error
    secret = field_name in SECRET_FIELDS
    shown = "<redacted>" if secret else repr(raw)
    try:
        if kind is bool:
            low = value.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        what = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise ConfigError(f"{env_name} must be {what}, got {shown}") from None
    if secret and any(c.isspace() for c in value):
        raise ConfigError(f"{env_name} contains whitespace inside the key; check for a paste error")
    return value


def load_settings_or_report(program: str = "voicegate") -> Settings | None:
    """Settings from the environment, or None after printing which variable is wrong (for commands)."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        return None
