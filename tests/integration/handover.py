"""Twilio's side of a stream that closes: the TwiML after `<Connect>` runs, its `<Redirect>` asks
`/twilio/voice` again, and the call goes on in a new stream wherever that answer points.

`follow_call` is a caller who holds the phone through all of that: it speaks its script into a
stream, and when the gateway closes the stream with 1012 (handed over, or refused while draining)
it does what Twilio does, on the instance a load balancer would pick (the first one whose
`/readyz` says ready), then speaks the rest of its script into the new stream. The caller hears the
new stream's first reply (the re-asked question) like a greeting.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Sequence

from loadgen.simcaller import CallerTurn, CallReport, run_call
from tests.support import RunningGateway

RESTARTING = 1012  # gateway.call.CLOSE_RESTARTING
MAX_LEGS = 4  # streams one call may take in a test: more is a redirect loop


@dataclass
class FollowedCall:
    call_sid: str
    legs: list[CallReport] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)  # which gateway served each leg (its URL)
    gaps_ms: list[float] = field(default_factory=list)  # a stream's close -> the next stream's first audio heard
    redirects: list[str] = field(default_factory=list)  # the TwiML answers followed

    @property
    def completed(self) -> bool:
        last = self.legs[-1] if self.legs else None
        return last is not None and last.error is None and last.completed

    @property
    def handed_over(self) -> bool:
        return len(self.legs) > 1

    def latencies_ms(self) -> list[float]:
        """Every time to a reply heard: each leg's first reply and its turns, and the gaps between legs."""
        out = list(self.gaps_ms)
        for i, leg in enumerate(self.legs):
            if i == 0 and leg.greeting_latency_ms is not None:
                out.append(leg.greeting_latency_ms)
            out += [t.latency_ms for t in leg.turns if t.latency_ms is not None]
        return out


def post_voice(gateway: RunningGateway, path_and_query: str, call_sid: str, caller: str) -> ET.Element:
    data = urllib.parse.urlencode({"CallSid": call_sid, "From": caller, "Direction": "inbound"}).encode()
    with urllib.request.urlopen(urllib.request.Request(gateway.url + path_and_query, data=data), timeout=10) as resp:
        return ET.fromstring(resp.read())


def ready(gateway: RunningGateway) -> bool:
    try:
        return gateway.get("/readyz", timeout=2)[0] == 200
    except OSError:
        return False


async def pick(gateways: Sequence[RunningGateway], timeout: float = 10.0) -> RunningGateway:
    """What a load balancer polling /readyz would send the request to."""
    deadline = time.monotonic() + timeout
    while True:
        for gateway in gateways:
            if await asyncio.to_thread(ready, gateway):
                return gateway
        if time.monotonic() > deadline:
            raise AssertionError("no gateway is ready")
        await asyncio.sleep(0.1)


async def follow_call(first: RunningGateway, gateways: Sequence[RunningGateway], turns: Sequence[CallerTurn],
                      call_sid: str, caller: str = "+15550001234", **call_args) -> FollowedCall:
    followed = FollowedCall(call_sid)
    params = {"callSid": call_sid, "caller": caller, "direction": "inbound", "attempt": "0"}
    gateway, remaining = first, list(turns)
    closed_at: float | None = None
    while len(followed.legs) < MAX_LEGS:
        leg = await run_call(gateway.media_url, remaining, call_sid=call_sid, parameters=params, **call_args)
        followed.legs.append(leg)
        followed.instances.append(gateway.url)
        if closed_at is not None and leg.greeting_latency_ms is not None:
            followed.gaps_ms.append((leg.call_start + leg.greeting_latency_ms / 1000 - closed_at) * 1000)
        if leg.close_code != RESTARTING:
            return followed
        closed_at = leg.call_start + leg.duration_s
        # The caller goes on with what was not answered yet (after a quiet hand-over: every turn spoken).
        answered = sum(1 for t in leg.turns if t.reply_start is not None)
        remaining = remaining[answered:]
        # Twilio: the <Redirect> after <Connect>, to whichever instance the load balancer picks.
        target = f"/twilio/voice?{urllib.parse.urlencode({'attempt': int(params.get('attempt', '0')) + 1})}"
        for _ in range(20):
            gateway = await pick(gateways)
            twiml = await asyncio.to_thread(post_voice, gateway, target, call_sid, caller)
            followed.redirects.append(ET.tostring(twiml, encoding="unicode"))
            stream = twiml.find("Connect/Stream")
            if stream is not None:
                params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
                break
            redirect = twiml.find("Redirect")
            assert redirect is not None, followed.redirects[-1]  # a hang-up would drop the call
            target = urllib.parse.urlsplit(redirect.text or "")._replace(scheme="", netloc="").geturl()
        else:
            raise AssertionError(f"redirected 20 times: {followed.redirects[-3:]}")
    return followed
