"""Helpers shared by the web tests (kept out of conftest so test modules can import them)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.support import RunningGateway

DASHBOARD_TOKEN = "web-tests-dashboard-token-0123456789abcdef"


def http(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request: (status, lower-cased headers, body), without raising on 4xx/5xx."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def login(gateway: RunningGateway, secret: str = DASHBOARD_TOKEN) -> dict:
    """POST /api/token with the operator secret: the short-lived tokens."""
    status, _, body = http(gateway.url + "/api/token", "POST", b"", {"Authorization": f"Bearer {secret}"})
    assert status == 200, body
    return json.loads(body)


def ws_url(gateway: RunningGateway, path: str) -> str:
    return f"ws://127.0.0.1:{gateway.port}{path}"
