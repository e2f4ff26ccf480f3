"""Outbound calls: `voicegate dial` and `POST /api/calls` place a call through Twilio's REST API
whose TwiML connects the callee to this gateway's `/twilio/media`, like an inbound call."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from gateway import twiml
from providers.settings import Settings, load_settings_or_report

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class DialError(ValueError):
    """The request cannot become a call (bad number, Twilio not configured)."""


def outbound_twiml(settings: Settings, to: str) -> str:
    # The call sid is not known before Twilio creates the call; `start` carries it anyway.
    return twiml.connect_stream(settings.media_stream_url, settings.public_http_url("/twilio/voice"),
                                call_sid="", caller=to, direction="outbound")


async def place_call(settings: Settings, rest, to: str, from_: str = "") -> str:
    """Create the call; returns its sid. `rest` is a `providers.twilio_rest.TwilioRest`."""
    from_ = from_ or settings.twilio_caller_id
    for name, number in (("to", to), ("from", from_)):
        if not E164.match(number or ""):
            raise DialError(f"'{name}' must be an E.164 number like +15551234567")
    return await rest.create_call(to, from_, twiml=outbound_twiml(settings, to),
                                  status_callback=settings.public_http_url("/twilio/status"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicegate dial", description="Place an outbound call through Twilio.")
    parser.add_argument("--to", required=True, help="the number to call, E.164")
    parser.add_argument("--from", dest="from_", default="", help="a Twilio number of yours (default $TWILIO_CALLER_ID)")
    args = parser.parse_args(argv)
    settings = load_settings_or_report("voicegate dial")
    if settings is None:
        return 2
    if not settings.twilio_rest_enabled:
        print("voicegate dial: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", file=sys.stderr)
        return 2
    from providers.base import ProviderError
    from providers.twilio_rest import TwilioRest

    async def run() -> int:
        rest = TwilioRest(settings)
        try:
            sid = await place_call(settings, rest, args.to, args.from_)
        except (DialError, ProviderError) as exc:
            print(f"voicegate dial: {exc}", file=sys.stderr)
            return 1
        finally:
            await rest.close()
        print(json.dumps({"call_sid": sid, "to": args.to}))
        return 0

    return asyncio.run(run())
