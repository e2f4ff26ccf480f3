"""Outbound calls: `voicegate dial` and `POST /api/calls` place a call through Twilio's REST API
whose TwiML connects the callee to this gateway's `/twilio/media`, like an inbound call.

The TwiML's URLs are `PUBLIC_URL`'s; without it, `POST /api/calls` uses the address the request was
sent to (`gateway.public_urls`), and `voicegate dial`, which has no request, asks for `PUBLIC_URL`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from gateway import twiml
from gateway.public_urls import Origin, PublicUrls
from providers.settings import Settings, load_settings_or_report

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class DialError(ValueError):
    """The request cannot become a call (bad number, Twilio not configured)."""


def outbound_twiml(origin: Origin, to: str) -> str:
    # The call sid is not known before Twilio creates the call; `start` carries it anyway.
    return twiml.connect_stream(origin.stream_url, origin.http_url("/twilio/voice"),
                                call_sid="", caller=to, direction="outbound")


async def place_call(settings: Settings, rest, origin: Origin, to: str, from_: str = "") -> str:
    """Create the call; returns its sid. `rest` is a `providers.twilio_rest.TwilioRest`; `origin` is
    where Twilio reaches this gateway."""
    from_ = from_ or settings.twilio_caller_id
    for name, number in (("to", to), ("from", from_)):
        if not E164.match(number or ""):
            raise DialError(f"'{name}' must be an E.164 number like +15551234567")
    return await rest.create_call(to, from_, twiml=outbound_twiml(origin, to),
                                  status_callback=origin.http_url("/twilio/status"))


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
    origin = PublicUrls(settings.public_url).configured
    if origin is None:
        print("voicegate dial: set PUBLIC_URL, the https URL Twilio reaches this gateway at", file=sys.stderr)
        return 2
    from providers.base import ProviderError
    from providers.twilio_rest import TwilioRest

    async def run() -> int:
        rest = TwilioRest(settings)
        try:
            sid = await place_call(settings, rest, origin, args.to, args.from_)
        except (DialError, ProviderError) as exc:
            print(f"voicegate dial: {exc}", file=sys.stderr)
            return 1
        finally:
            await rest.close()
        print(json.dumps({"call_sid": sid, "to": args.to}))
        return 0

    return asyncio.run(run())
