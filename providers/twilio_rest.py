"""Twilio REST calls (hang up, transfer, outbound dial, account probe) on the official SDK (§4).

The SDK runs on `AsyncTwilioHttpClient` (aiohttp). Its `ClientSession` must be created inside the
running event loop, so the HTTP client is built lazily on first use and closed by `close()`.

`TWILIO_API_BASE_URL` redirects every request (PROTOCOLS §4 option B): `_TwilioHttpClient`
rewrites the scheme and host of each URL the SDK builds (api.twilio.com, voice.twilio.com, ...) to
the configured base, so one override covers every Twilio domain, e.g. the local emulator.

Errors become `ProviderError` with Twilio's status and error code; 401/403 are `ProviderAuthError`.
Messages are built here from the status and code, never from request data: the auth token cannot
leak into a log line.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from providers.settings import Settings
from providers.base import ProviderAuthError, ProviderError, ProviderTimeout
from providers.retry import ProviderCounters

log = logging.getLogger("voicegate.twilio.rest")

PROVIDER = "twilio"
# Call updates answer in ~200-500 ms; a hang-up that takes longer than this is better retried.
REQUEST_TIMEOUT_SECONDS = 5.0
# Error 21220: "Call is not in-progress. Cannot redirect." The call already ended: nothing to do.
CALL_NOT_IN_PROGRESS = 21220

T = TypeVar("T")


class _TwilioHttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client with two changes:

    - Basic auth goes in as an `Authorization` header: aiohttp >= 3.10 deprecates its `auth=`
      parameter, and the SDK's log lines skip that header, so the token is never logged;
    - with a `base` (scheme, host, optional path prefix), every request goes there instead."""

    def __init__(self, base: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urlsplit(base)
        self._base = (parts.scheme, parts.netloc, parts.path.rstrip("/")) if base else None

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Any:
        if auth is not None:
            headers = dict(headers or {})
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if self._base is not None:
            scheme, netloc, prefix = self._base
            parts = urlsplit(url)
            url = urlunsplit((scheme, netloc, prefix + parts.path, parts.query, ""))
        return await super().request(method, url, params=params, data=data, headers=headers, auth=None,
                                     timeout=timeout, allow_redirects=allow_redirects)


class TwilioRest:
    def __init__(self, settings: Settings, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.account_sid = settings.twilio_account_sid.strip()
        self._token = settings.twilio_auth_token.strip()
        if not (self.account_sid and self._token):
            raise ProviderAuthError(PROVIDER, "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are not set", status=None)
        self.base_url = settings.twilio_api_base_url.strip()
        self.timeout = timeout
        self.counters = ProviderCounters(PROVIDER, "rest")
        self._http: _TwilioHttpClient | None = None
        self._client: Client | None = None

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks' locals
        return f"TwilioRest(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> Client:
        """The SDK client; created on first use, inside the running loop (aiohttp needs one)."""
        if self._client is None:
            asyncio.get_running_loop()
            self._http = _TwilioHttpClient(self.base_url, timeout=self.timeout)
            self._client = Client(self.account_sid, self._token, http_client=self._http)
        return self._client

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None and http.session is not None:
            try:
                await http.session.close()
            except Exception:
                log.exception("closing the Twilio HTTP session failed")

    # ------------------------------------------------------------------ calls

    async def hang_up(self, call_sid: str) -> bool:
        """End a live call. False if it had already ended; raises ProviderError otherwise."""
        return await self._update(call_sid, status="completed")

    async def transfer(self, call_sid: str, number: str, *, caller_id: str | None = None) -> bool:
        """Redirect a live call to `<Dial>number</Dial>`. False if the call had already ended."""
        response = VoiceResponse()
        response.dial(number, caller_id=caller_id)
        return await self._update(call_sid, twiml=str(response))

    async def create_call(self, to: str, from_: str, twiml: str | None = None, url: str | None = None,
                          status_callback: str | None = None) -> str:
        """Place an outbound call; returns the new call's sid. Give `twiml` or `url`."""
        if not (twiml or url):
            raise ValueError("create_call needs twiml or url")
        kwargs: dict[str, Any] = {"to": to, "from_": from_}
        if twiml:
            kwargs["twiml"] = twiml
        if url:
            kwargs["url"] = url
        if status_callback:
            kwargs["status_callback"] = status_callback
        call = await self._request("create call", lambda: self.client.calls.create_async(**kwargs))
        return str(call.sid)

    async def probe(self) -> str:
        """An authenticated GET of the account resource; returns the account status ("active")."""
        account = await self._request("fetch account",
                                      lambda: self.client.api.v2010.accounts(self.account_sid).fetch_async())
        return str(account.status)

    # ------------------------------------------------------------------ plumbing

    async def _update(self, call_sid: str, **changes: Any) -> bool:
        try:
            await self._request("update call", lambda: self.client.calls(call_sid).update_async(**changes))
        except ProviderError as exc:
            if getattr(exc, "code", None) == CALL_NOT_IN_PROGRESS:
                return False
            raise
        return True

    async def _request(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        self.counters.count("request")
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except TwilioRestException as exc:
            self.counters.count("error")
            raise rest_error(what, exc) from None
        except TimeoutError:
            self.counters.count("error")
            raise ProviderTimeout(PROVIDER, f"{what}: no answer within {self.timeout:g} s") from None
        except OSError as exc:
            self.counters.count("error")
            raise ProviderError(PROVIDER, f"{what}: connection failed ({type(exc).__name__})") from None
        except Exception as exc:  # aiohttp.ClientError and friends
            self.counters.count("error")
            raise ProviderError(PROVIDER, f"{what}: request failed ({type(exc).__name__})") from None


def rest_error(what: str, exc: TwilioRestException) -> ProviderError:
    status, code = exc.status, exc.code
    error: ProviderError
    if status in (401, 403):
        error = ProviderAuthError(PROVIDER, f"{what}: credentials refused (HTTP {status}, code {code})",
                                  status=status)
    else:
        error = ProviderError(PROVIDER, f"{what}: HTTP {status}, Twilio error {code}", status=status,
                              retryable=status >= 500 or status == 429)
    error.code = code  # type: ignore[attr-defined]
    return error
