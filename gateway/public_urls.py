"""Where Twilio reaches this gateway: the URLs our TwiML gives Twilio, and the URLs Twilio signs.

With `PUBLIC_URL` set, it is the answer for every request: the TwiML's `<Stream url>` is
`wss://<its host>/twilio/media` and its `<Redirect>` and the signature checks use its scheme and host.
A gateway behind a tunnel or a proxy whose public name the requests do not carry needs it.

Unset, each request says where it was sent: the scheme it came in on and its `Host` header, port
included, so a gateway started on `PORT=8765` answers with `:8765` and a plain-HTTP one points the
stream at `ws://` (a gateway without TLS cannot answer `wss://` on the same port). Behind proxies the
connection the gateway sees is the nearest proxy's: with `TRUSTED_PROXY_HOPS=N` the request's
`X-Forwarded-Proto` and `X-Forwarded-Host` are read at the N-th entry from the right, the hop whose
`X-Forwarded-For` entry the per-IP limits read (a proxy that sets the header rather than appending to
it leaves one entry, which is taken). With no trusted hop those headers are ignored: any client can
send them. uvicorn's own proxy-header handling is off (`gateway.cli`), so this setting is the only one.

Twilio signs the URL it requested (`X-Twilio-Signature`, HMAC-SHA1 over it and the form parameters),
and what it requests is what our TwiML told it, or the number's webhook URL: rebuilding that URL the
same way from the request makes the signature check and the TwiML agree. The WebSocket upgrade is
signed over the `wss://` stream URL, rebuilt from the upgrade request the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MEDIA_PATH = "/twilio/media"

# A host[:port] as it may appear in a URL: a DNS name or IPv4 address, or a bracketed IPv6 address.
# Anything else in a Host header (a path, credentials, spaces) is not used to build a URL.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_SECURE = {"https": True, "wss": True, "http": False, "ws": False}


@dataclass(frozen=True, slots=True)
class Origin:
    """The scheme and host one request was sent to (or PUBLIC_URL's): the base of the URLs Twilio
    is given and signs."""

    scheme: str  # "http" | "https"
    host: str  # host[:port], as in the URL
    stream_scheme: str  # "ws" | "wss"

    def http_url(self, path: str, query: str = "") -> str:
        return f"{self.scheme}://{self.host}{path}" + (f"?{query}" if query else "")

    @property
    def stream_url(self) -> str:
        return f"{self.stream_scheme}://{self.host}{MEDIA_PATH}"


class PublicUrls:
    def __init__(self, public_url: str = "", trusted_proxy_hops: int = 0) -> None:
        self._trusted_hops = trusted_proxy_hops
        self.configured: Origin | None = None  # from PUBLIC_URL; None when each request decides
        if public_url:
            parts = urlsplit(public_url)
            # Twilio connects Media Streams over wss:// only, whatever PUBLIC_URL's scheme.
            self.configured = Origin(parts.scheme, parts.netloc, "wss")

    def origin(self, scope) -> Origin:
        """Where this request (HTTP or WebSocket upgrade, an ASGI scope) was sent."""
        if self.configured is not None:
            return self.configured
        secure = _SECURE.get(scope.get("scheme", "http"), False)
        host = ""
        if self._trusted_hops:
            proto = self._forwarded(scope, b"x-forwarded-proto").lower()
            if proto in _SECURE:
                secure = _SECURE[proto]
            host = self._forwarded(scope, b"x-forwarded-host")
        if not _HOST.match(host):
            host = _header(scope, b"host")
        if not _HOST.match(host):
            server = scope.get("server") or ("localhost", None)
            name = f"[{server[0]}]" if ":" in server[0] else server[0]
            host = name if server[1] is None else f"{name}:{server[1]}"
        return Origin("https" if secure else "http", host, "wss" if secure else "ws")

    def _forwarded(self, scope, name: bytes) -> str:
        values = [v.strip() for key, value in scope.get("headers", ()) if key == name
                  for v in value.decode("latin-1").split(",")]
        if not values:
            return ""
        return values[-self._trusted_hops] if len(values) >= self._trusted_hops else values[0]


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip()
    return ""
