"""Short-lived dashboard/softphone tokens (gateway/auth.py): expiry, scope, forgery, the access rule."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.auth import (
    Access, MAX_TTL_S, SCOPES, TokenError, bearer, is_local, issue_token, softphone_allowed, verify_token,
)

SECRET = "operator-secret-0123456789"
NOW = 1_800_000_000.0


def test_a_token_verifies_for_its_scope_until_it_expires():
    token = issue_token(SECRET, "dashboard", ttl_seconds=600, now=NOW)
    assert verify_token(SECRET, token, "dashboard", now=NOW)
    assert verify_token(SECRET, token, "dashboard", now=NOW + 599)
    assert not verify_token(SECRET, token, "dashboard", now=NOW + 600)
    assert not verify_token(SECRET, token, "dashboard", now=NOW + 10_000)


def test_scope_is_enforced_both_ways():
    dashboard = issue_token(SECRET, "dashboard", now=NOW)
    softphone = issue_token(SECRET, "softphone", now=NOW)
    assert not verify_token(SECRET, dashboard, "softphone", now=NOW)
    assert not verify_token(SECRET, softphone, "dashboard", now=NOW)
    assert verify_token(SECRET, softphone, "softphone", now=NOW)
    assert not verify_token(SECRET, dashboard, "admin", now=NOW)


def test_another_secret_does_not_verify():
    token = issue_token(SECRET, "dashboard", now=NOW)
    assert not verify_token("another-secret", token, "dashboard", now=NOW)
    assert not verify_token("", token, "dashboard", now=NOW)


def _parts(token: str) -> tuple[bytes, bytes]:
    body, mac = token.split(".")
    pad = lambda t: t + "=" * (-len(t) % 4)  # noqa: E731
    return base64.urlsafe_b64decode(pad(body)), base64.urlsafe_b64decode(pad(mac))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_forged_tokens_are_refused():
    token = issue_token(SECRET, "softphone", ttl_seconds=60, now=NOW)
    payload, mac = _parts(token)
    scope, expiry, nonce = payload.decode().split("|")
    # Extending the expiry or changing the scope without the key breaks the MAC.
    longer = f"{scope}|{int(expiry) + 86400}|{nonce}".encode()
    assert not verify_token(SECRET, f"{_b64(longer)}.{_b64(mac)}", "softphone", now=NOW)
    rescoped = f"dashboard|{expiry}|{nonce}".encode()
    assert not verify_token(SECRET, f"{_b64(rescoped)}.{_b64(mac)}", "dashboard", now=NOW)
    # A MAC made with the operator secret itself (not the derived key) is not accepted either.
    raw = hmac.new(SECRET.encode(), longer, hashlib.sha256).digest()
    assert not verify_token(SECRET, f"{_b64(longer)}.{_b64(raw)}", "softphone", now=NOW)
    # One flipped bit in the MAC.
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    assert not verify_token(SECRET, f"{_b64(payload)}.{_b64(flipped)}", "softphone", now=NOW)


@pytest.mark.parametrize("garbage", [
    "", ".", "abc", "abc.", ".abc", "a.b.c", "!!!.???", "x" * 5000, "ZGFzaGJvYXJk.AAAA", "\u00e9\u00e9.\u00e9",
])
def test_garbage_is_refused_without_raising(garbage):
    assert not verify_token(SECRET, garbage, "dashboard", now=NOW)


def test_tokens_carry_no_secret_and_differ_each_time():
    a = issue_token(SECRET, "dashboard", now=NOW)
    b = issue_token(SECRET, "dashboard", now=NOW)
    assert a != b  # a nonce: two logins never share a token
    for token in (a, b):
        payload, _ = _parts(token)
        assert SECRET.encode() not in payload and SECRET not in token
        assert payload.decode().startswith("dashboard|")
        assert all(c.isalnum() or c in "-_." for c in token)  # base64url: safe in a query string


def test_issue_refuses_misuse():
    with pytest.raises(TokenError):
        issue_token("", "dashboard")
    with pytest.raises(TokenError):
        issue_token(SECRET, "root")
    with pytest.raises(TokenError):
        issue_token(SECRET, "dashboard", ttl_seconds=0)
    with pytest.raises(TokenError):
        issue_token(SECRET, "dashboard", ttl_seconds=MAX_TTL_S + 1)
    assert set(SCOPES) == {"dashboard", "softphone"}


def test_bearer_header():
    assert bearer({"authorization": "Bearer abc.def"}) == "abc.def"
    assert bearer({"authorization": "bearer  abc "}) == "abc"
    assert bearer({"authorization": "Basic abc"}) == ""
    assert bearer({}) == ""


def test_local_means_loopback_without_proxy_headers():
    assert is_local("127.0.0.1", {})
    assert is_local("::1", {})
    assert not is_local("10.0.0.5", {})
    assert not is_local(None, {})
    assert not is_local("testclient", {})
    # A proxy on the same machine connects from 127.0.0.1 but relays someone else.
    assert not is_local("127.0.0.1", {"x-forwarded-for": "203.0.113.9"})
    assert not is_local("127.0.0.1", {"forwarded": "for=203.0.113.9"})
    # The page and its API asked for by a loopback name, from a loopback origin (or no browser at all).
    assert is_local("127.0.0.1", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"})
    assert is_local("127.0.0.1", {"host": "localhost:8000", "origin": "http://localhost:8000"})
    assert is_local("::1", {"host": "[::1]:8000"})
    # A foreign page open in the operator's browser (WebSockets are not subject to CORS)...
    assert not is_local("127.0.0.1", {"host": "127.0.0.1:8000", "origin": "https://evil.example"})
    # ...or a DNS-rebound name pointing at 127.0.0.1.
    assert not is_local("127.0.0.1", {"host": "evil.example:8000", "origin": "http://evil.example:8000"})


def test_access_with_a_dashboard_token():
    access = Access(SECRET)
    tokens = access.issue()
    assert access.check("dashboard", tokens["dashboard"], "203.0.113.9", {}) is None
    assert access.check("softphone", tokens["softphone"], "203.0.113.9", {}) is None
    assert access.check("dashboard", tokens["softphone"], "127.0.0.1", {}) == "unauthorized"
    assert access.check("dashboard", "", "127.0.0.1", {}) == "unauthorized"  # local is no exception
    assert access.check("dashboard", SECRET, "203.0.113.9", {}) is None  # scripts may use the secret itself
    assert access.check("softphone", SECRET, "203.0.113.9", {}) == "unauthorized"
    # Login: the secret or a live dashboard token (the page's refresh); never a softphone token.
    assert access.login(SECRET, "203.0.113.9", {}) is None
    assert access.login(tokens["dashboard"], "203.0.113.9", {}) is None
    assert access.login(tokens["softphone"], "203.0.113.9", {}) == "unauthorized"
    assert access.login("guess", "127.0.0.1", {}) == "unauthorized"
    assert softphone_allowed(SECRET, tokens["softphone"], "203.0.113.9", {})
    assert not softphone_allowed(SECRET, tokens["dashboard"], "203.0.113.9", {})


def test_access_without_a_dashboard_token_is_local_only():
    access = Access("")
    assert not access.enabled
    assert access.check("dashboard", "", "127.0.0.1", {}) is None
    assert access.login("", "127.0.0.1", {}) is None
    assert access.check("dashboard", "", "198.51.100.7", {}) == "disabled"
    assert access.login("anything", "198.51.100.7", {}) == "disabled"
    assert access.check("dashboard", "", "127.0.0.1", {"x-forwarded-for": "198.51.100.7"}) == "disabled"
    assert softphone_allowed("", "whatever", "127.0.0.1", {})
    assert not softphone_allowed("", "whatever", "198.51.100.7", {})
    # Tokens are still issued (so the page works the same) but signed with a per-process key.
    tokens = access.issue()
    assert not verify_token("", tokens["dashboard"], "dashboard")
