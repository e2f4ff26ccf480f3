"""Structured JSON logs with the call's ids on every line.

The call sid, stream sid and turn id live in context variables set by the call's task; tasks it
starts inherit them, so a provider's log line carries the ids without passing them around. With
tracing on (gateway/tracing.py) the call's trace id is one more, to find a log line's trace. Caller
numbers are masked and anything that looks like a key is redacted before a line is written.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys

import orjson

call_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_sid", default="")
stream_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("stream_sid", default="")
turn_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("turn_id", default=None)
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

# A phone number stands alone: not digits inside an identifier (a call sid "CA53b8...66895555558587...", whose
# masking broke finding a call's lines by its sid) nor an ISO date ("2026-12-17").
_PHONE = re.compile(r"(?<![\w+])(?!\d{4}-\d\d-\d\d(?!\d))\+?\d[\d\-\s().]{7,}\d(?!\w)")
# Bearer/Token headers, sk-..., xi-api-key style values, and long opaque tokens.
_SECRETISH = re.compile(r"(?i)(bearer\s+|token\s+|token=|signature=|sk-|xi-api-key[\"':=\s]+|api[_-]?key[\"':=\s]+)"
                        r"[A-Za-z0-9_\-\.%]{6,}")


def mask_number(number: str) -> str:
    """+15550001234 -> +1555***1234: enough to tell callers apart, not enough to call them."""
    digits = [c for c in number if c.isdigit()]
    if len(digits) < 7:
        return "***" if number else ""
    return ("+" if number.startswith("+") else "") + "".join(digits[:4]) + "***" + "".join(digits[-4:])


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRETISH.sub(lambda m: m.group(1) + "[redacted]", text)
    return _PHONE.sub(lambda m: mask_number(m.group(0)), text)


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage(), self._secrets),
        }
        for key, var in (("call_sid", call_sid_var), ("stream_sid", stream_sid_var), ("turn_id", turn_id_var),
                         ("trace_id", trace_id_var)):
            value = getattr(record, key, None) or var.get()
            if value not in (None, ""):
                line[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line[key] = scrub(value, self._secrets) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = scrub(f"{record.exc_info[0].__name__}: {record.exc_info[1]}", self._secrets)
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str = "INFO", secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "websockets", "httpx", "httpx2", "httpcore", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: object) -> None:
    """One structured line: `msg` plus `fields` as top-level JSON keys."""
    logger.log(level, msg, extra={"fields": fields})
