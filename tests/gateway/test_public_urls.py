"""The URLs Twilio is given and signs: PUBLIC_URL when set, else where the request was sent (its Host;
trusted proxies' X-Forwarded-Proto/-Host). Unit tests of `PublicUrls`, then the real server."""

from __future__ import annotations

import contextlib
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Iterator

import pytest
import websockets
from twilio.request_validator import RequestValidator

from gateway.public_urls import PublicUrls
from tests.support import RunningGateway, run_emulators, run_gateway
from tests.web.web_helpers import http

TOKEN = "public-urls-auth-token-0123456789"
FORM = {"CallSid": "CA0123", "From": "+15550001111"}


def scope(host: str | None = "gw.internal:8765", scheme: str = "http", **headers: str) -> dict:
    raw = [(b"host", host.encode())] if host is not None else []
    raw += [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "scheme": scheme, "headers": raw, "server": ("10.0.0.5", 8765)}


def test_without_public_url_the_request_host_and_port_decide():
    origin = PublicUrls().origin(scope("gw.internal:8765"))
    assert origin.stream_url == "ws://gw.internal:8765/twilio/media"
    assert origin.http_url("/twilio/voice", "attempt=1") == "http://gw.internal:8765/twilio/voice?attempt=1"
    # A TLS connection (uvicorn with a certificate) and its WebSocket upgrade say so in the scope.
    assert PublicUrls().origin(scope("voice.example.com", "https")).stream_url == "wss://voice.example.com/twilio/media"
    assert PublicUrls().origin(scope("voice.example.com", "wss")).http_url("/x") == "https://voice.example.com/x"
    assert PublicUrls().origin(scope("[2001:db8::1]:8765")).stream_url == "ws://[2001:db8::1]:8765/twilio/media"


def test_a_missing_or_malformed_host_falls_back_to_the_socket_address():
    assert PublicUrls().origin(scope(None)).host == "10.0.0.5:8765"
    for bad in ("evil.example/path", "user@evil.example", "a b", "", "evil.example:port"):
        assert PublicUrls().origin(scope(bad)).host == "10.0.0.5:8765", bad


def test_forwarded_headers_count_only_from_trusted_proxies():
    forwarded = scope("10.0.0.5:8765", x_forwarded_proto="https", x_forwarded_host="voice.example.com")
    assert PublicUrls().origin(forwarded).stream_url == "ws://10.0.0.5:8765/twilio/media"  # anyone can send them
    trusted = PublicUrls(trusted_proxy_hops=1).origin(forwarded)
    assert trusted.stream_url == "wss://voice.example.com/twilio/media"
    assert trusted.http_url("/twilio/voice") == "https://voice.example.com/twilio/voice"
    # A client's own entries come first; the proxy appends: the entry of the trusted hop is read.
    injected = scope("10.0.0.5:8765", x_forwarded_proto="http, https", x_forwarded_host="evil.example, voice.example.com")
    assert PublicUrls(trusted_proxy_hops=1).origin(injected).stream_url == "wss://voice.example.com/twilio/media"
    two = scope("10.0.0.5", x_forwarded_proto="https, http", x_forwarded_host="voice.example.com, lb.internal")
    assert PublicUrls(trusted_proxy_hops=2).origin(two).http_url("/") == "https://voice.example.com/"
    # Nonsense from a proxy is not used: the request's own scheme and Host are.
    odd = scope("gw.internal", x_forwarded_proto="gopher", x_forwarded_host="a/b")
    assert PublicUrls(trusted_proxy_hops=1).origin(odd).http_url("/") == "http://gw.internal/"


def test_public_url_wins():
    urls = PublicUrls("https://gw.example.com", trusted_proxy_hops=1)
    origin = urls.origin(scope("10.0.0.5:8765", x_forwarded_host="other.example", x_forwarded_proto="http"))
    assert origin.stream_url == "wss://gw.example.com/twilio/media"
    assert origin.http_url("/twilio/voice", "attempt=1") == "https://gw.example.com/twilio/voice?attempt=1"
    # Twilio streams over wss:// only, whatever PUBLIC_URL's scheme (as before PUBLIC_URL was optional).
    assert PublicUrls("http://127.0.0.1:9000").origin(scope()).stream_url == "wss://127.0.0.1:9000/twilio/media"
    assert urls.configured is origin and PublicUrls().configured is None


# ---------------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def emulators():
    with run_emulators() as running:
        yield running


@contextlib.contextmanager
def gateway(emulators, **env: str) -> Iterator[RunningGateway]:
    """A gateway whose engines are the emulators (ready in a second or two), signatures checked."""
    full = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "MODEL_VAD": "false",
            "TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": "", **env}
    with run_gateway(env=full) as running:
        yield running


def voice(gw: RunningGateway, signed_url: str | None, **headers: str) -> tuple[int, ET.Element | None]:
    """POST /twilio/voice?attempt=0 signed over `signed_url` (with the query); the TwiML."""
    sent = dict(headers)
    if signed_url is not None:
        sent["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(signed_url + "?attempt=0", FORM)
    status, _, body = http(gw.url + "/twilio/voice?attempt=0", "POST", urllib.parse.urlencode(FORM).encode(),
                           {"Content-Type": "application/x-www-form-urlencoded", **sent})
    return status, (ET.fromstring(body) if status == 200 else None)


def urls_of(twiml: ET.Element) -> tuple[str, str]:
    return twiml.find("Connect/Stream").get("url"), twiml.find("Redirect").text


async def media_upgrade(gw: RunningGateway, signed_url: str, **headers: str) -> int:
    """The Media Streams handshake signed over `signed_url`: 101 (open) or the refusal's status."""
    signature = RequestValidator(TOKEN).compute_signature(signed_url, {})
    try:
        async with websockets.connect(gw.media_url, additional_headers={"X-Twilio-Signature": signature, **headers},
                                      open_timeout=10):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def test_without_public_url_the_twiml_follows_the_request(emulators):
    with gateway(emulators) as gw:
        own = f"http://127.0.0.1:{gw.port}/twilio/voice"
        status, twiml = voice(gw, own)
        assert status == 200
        assert urls_of(twiml) == (f"ws://127.0.0.1:{gw.port}/twilio/media", own + "?attempt=1")
        # The Host the request was sent to, port included (a tunnel, a name for this machine).
        status, twiml = voice(gw, "http://voice.example.com:8765/twilio/voice", Host="voice.example.com:8765")
        assert status == 200
        assert urls_of(twiml) == ("ws://voice.example.com:8765/twilio/media",
                                  "http://voice.example.com:8765/twilio/voice?attempt=1")
        # No trusted proxy: X-Forwarded-* change nothing, and a signature over them does not verify.
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
        status, twiml = voice(gw, own, **forwarded)
        assert status == 200 and urls_of(twiml)[0] == f"ws://127.0.0.1:{gw.port}/twilio/media"
        assert voice(gw, "https://evil.example/twilio/voice", **forwarded)[0] == 403
        assert voice(gw, None)[0] == 403
        # The stream upgrade is signed over the stream URL the TwiML gave.
        assert await media_upgrade(gw, f"ws://127.0.0.1:{gw.port}/twilio/media") == 101
        assert await media_upgrade(gw, f"wss://127.0.0.1:{gw.port}/twilio/media") == 403
        assert await media_upgrade(gw, "wss://evil.example/twilio/media", **forwarded) == 403


async def test_behind_a_trusted_proxy_the_forwarded_host_and_scheme_decide(emulators):
    with gateway(emulators, TRUSTED_PROXY_HOPS="1") as gw:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
        status, twiml = voice(gw, "https://voice.example.com/twilio/voice", **forwarded)
        assert status == 200
        assert urls_of(twiml) == ("wss://voice.example.com/twilio/media",
                                  "https://voice.example.com/twilio/voice?attempt=1")
        # Signed over the proxy's public URL, not the address the proxy connected to.
        assert voice(gw, f"http://127.0.0.1:{gw.port}/twilio/voice", **forwarded)[0] == 403
        assert await media_upgrade(gw, "wss://voice.example.com/twilio/media", **forwarded) == 101
        assert await media_upgrade(gw, f"ws://127.0.0.1:{gw.port}/twilio/media", **forwarded) == 403
        # A request without the headers (straight to the gateway) is answered for where it went.
        status, twiml = voice(gw, f"http://127.0.0.1:{gw.port}/twilio/voice")
        assert status == 200 and urls_of(twiml)[0] == f"ws://127.0.0.1:{gw.port}/twilio/media"


async def test_public_url_wins_over_the_request(emulators):
    with gateway(emulators, PUBLIC_URL="https://gw.example.com", TRUSTED_PROXY_HOPS="1") as gw:
        forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "voice.example.com"}
        status, twiml = voice(gw, "https://gw.example.com/twilio/voice", **forwarded)
        assert status == 200
        assert urls_of(twiml) == ("wss://gw.example.com/twilio/media", "https://gw.example.com/twilio/voice?attempt=1")
        assert voice(gw, f"http://127.0.0.1:{gw.port}/twilio/voice")[0] == 403
        assert voice(gw, "http://voice.example.com/twilio/voice", **forwarded)[0] == 403
        assert await media_upgrade(gw, "wss://gw.example.com/twilio/media") == 101
        assert await media_upgrade(gw, f"ws://127.0.0.1:{gw.port}/twilio/media") == 403


def test_started_on_another_port_the_webhook_names_that_port(emulators):
    """The issue's case: PORT=8765-style start without PUBLIC_URL and without a token (local development)."""
    with gateway(emulators, TWILIO_AUTH_TOKEN="") as gw:
        status, _, body = http(gw.url + "/twilio/voice", "POST", urllib.parse.urlencode(FORM).encode(),
                               {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200
        stream, redirect = urls_of(ET.fromstring(body))
        assert stream == f"ws://127.0.0.1:{gw.port}/twilio/media" and gw.port != 8000
        assert redirect == f"http://127.0.0.1:{gw.port}/twilio/voice?attempt=1"


async def test_a_signed_call_runs_without_public_url(emulators):
    """`voicegate call` against a gateway without PUBLIC_URL signs over the URL it connects to."""
    from loadgen import simcaller

    with gateway(emulators) as gw:
        env = {"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": ""}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            signature = simcaller._twilio_signature(gw.media_url)
        assert signature == RequestValidator(TOKEN).compute_signature(gw.media_url, {})
        report = await simcaller.run_call(gw.media_url, [], headers={"X-Twilio-Signature": signature},
                                          max_call_s=20)
        assert report.error is None and report.completed, report.error
