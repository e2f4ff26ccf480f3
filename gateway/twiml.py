"""TwiML documents, built with the `twilio` package.

The call's TwiML is `<Connect><Stream>` followed by a `<Redirect>` back to `/twilio/voice`. Twilio
runs what follows `<Connect>` only once our side closes the stream, which happens for two reasons:
the dialog ended the call (then `/twilio/voice` finds the call in the ended set and answers
`<Hangup/>`, or `<Dial>` for a transfer), or the worker serving the stream died (then it answers
`<Connect><Stream>` again and the new stream resumes the conversation). A bounded attempt counter in
the redirect URL stops a crash loop from ringing forever.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

MAX_RESUME_ATTEMPTS = 2  # a stream that dies twice in one call is not coming back: say goodbye
# A draining instance sends webhooks back to the same URL for the load balancer to route elsewhere.
# After this many round trips (a second's pause each) the load balancer is not moving traffic, and
# the caller is told to call again rather than kept in silence.
MAX_DRAIN_HOPS = 10
DRAIN_HOP_PAUSE_SECONDS = 1  # time for a load balancer that polls /readyz to take this instance out


def connect_stream(stream_url: str, voice_url: str, call_sid: str, caller: str, attempt: int = 0,
                   direction: str = "inbound", extra: dict[str, str] | None = None) -> str:
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    stream.parameter(name="callSid", value=call_sid)
    stream.parameter(name="caller", value=caller)
    stream.parameter(name="direction", value=direction)
    stream.parameter(name="attempt", value=str(attempt))
    for name, value in (extra or {}).items():
        stream.parameter(name=name, value=value)
    response.redirect(f"{voice_url}?{urlencode({'attempt': attempt + 1})}", method="POST")
    return str(response)


def try_elsewhere(voice_url: str, query: dict[str, str]) -> str:
    """This instance is draining: a short pause, then the same webhook again (another instance)."""
    response = VoiceResponse()
    response.pause(length=DRAIN_HOP_PAUSE_SECONDS)
    response.redirect(f"{voice_url}?{urlencode(query)}", method="POST")
    return str(response)


def hangup(message: str = "") -> str:
    response = VoiceResponse()
    if message:
        response.say(message)
    response.hangup()
    return str(response)


def busy() -> str:
    """Over capacity: a busy signal costs the caller nothing and tells them to call back."""
    response = VoiceResponse()
    response.reject(reason="busy")
    return str(response)


def dial(number: str) -> str:
    response = VoiceResponse()
    response.dial(number)
    return str(response)
