"""probe_all and ProbeCache: reachability and key checks of every configured provider, no secret out."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import pytest

from emulators.server import EmulatorServer
from providers.settings import Settings
from providers.probes import PROVIDERS, ProbeCache, probe_all, scrub
from provider_helpers import closed_port

SECRETS = {
    "deepgram_api_key": "dg-SECRET-aaaaaaaaaaaa",
    "openai_api_key": "sk-SECRET-bbbbbbbbbbbb",
    "elevenlabs_api_key": "xi-SECRET-cccccccccccc",
    "twilio_auth_token": "tw-SECRET-dddddddddddd",
}
SID = "AC" + "2" * 32


def all_settings(base: str, **overrides: str) -> Settings:
    values: dict[str, Any] = {
        **SECRETS, "deepgram_base_url": base.replace("http://", "ws://"), "openai_base_url": f"{base}/v1",
        "elevenlabs_base_url": base, "twilio_account_sid": SID, "twilio_api_base_url": base,
        "dashboard_token": "dash-SECRET-eeeeeeeeee",
    }
    values.update(overrides)
    return Settings(**values)


def assert_no_secret(report: dict[str, Any], settings: Settings) -> None:
    text = json.dumps(report)
    for name in (*SECRETS, "dashboard_token"):
        value = getattr(settings, name)
        if value:
            assert value not in text
            assert value[:6] not in text  # not even a prefix


@pytest.fixture
async def accepting(emu: EmulatorServer) -> AsyncIterator[EmulatorServer]:
    emu.config.merge({"deepgram": {"api_key": SECRETS["deepgram_api_key"]},
                      "openai": {"api_key": SECRETS["openai_api_key"]},
                      "elevenlabs": {"api_key": SECRETS["elevenlabs_api_key"]},
                      "twilio": {"account_sid": SID, "auth_token": SECRETS["twilio_auth_token"]}})
    yield emu


async def test_all_ok_against_the_emulators(accepting: EmulatorServer) -> None:
    settings = all_settings(accepting.url)
    report = await probe_all(settings)
    assert_no_secret(report, settings)
    for name in PROVIDERS:
        entry = report["providers"][name]
        assert entry["status"] == "ok", (name, entry)
        assert entry["host"] == "127.0.0.1" and entry["port"] == accepting.port
        assert all(isinstance(entry[k], float) for k in ("dns_ms", "tcp_ms", "auth_ms"))
    assert "handshake" in report["providers"]["elevenlabs"]["detail"]  # the emulator has no /v1/user
    assert report["duration_ms"] < 5000
    (socket,) = accepting.log.deepgram
    assert socket["close_streams"] and socket["query"]["tag"] == "voicegate-probe"  # said goodbye; told apart


async def test_bad_keys_are_auth_failed(accepting: EmulatorServer) -> None:
    settings = all_settings(accepting.url, deepgram_api_key="dg-WRONG-1111111111", openai_api_key="sk-WRONG-22222222",
                            elevenlabs_api_key="xi-WRONG-33333333", twilio_auth_token="tw-WRONG-44444444")
    report = await probe_all(settings)
    assert {name: report["providers"][name]["status"] for name in PROVIDERS} == dict.fromkeys(PROVIDERS, "auth_failed")
    assert_no_secret(report, settings)


async def test_closed_port_is_unreachable() -> None:
    settings = all_settings(f"http://127.0.0.1:{closed_port()}")
    report = await probe_all(settings)
    for name in PROVIDERS:
        entry = report["providers"][name]
        assert entry["status"] == "unreachable", (name, entry)
        assert entry["dns_ms"] is not None and entry["tcp_ms"] is None
    assert_no_secret(report, settings)


async def test_unconfigured_providers_are_not_probed() -> None:
    report = await probe_all(Settings())
    assert {name: report["providers"][name] for name in PROVIDERS} == dict.fromkeys(
        PROVIDERS, {"configured": False, "status": "not_configured"})


async def test_a_server_that_never_answers_is_a_timeout_within_the_bound() -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept TCP, then say nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        report = await probe_all(Settings(openai_api_key="sk-x", openai_base_url=f"http://127.0.0.1:{port}/v1"),
                                 timeout=1.0)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert loop.time() - started < 2.0
    entry = report["providers"]["openai"]
    assert entry["status"] == "timeout" and entry["tcp_ms"] is not None and entry["auth_ms"] is None


def test_scrub_removes_every_secret_everywhere() -> None:
    out = scrub({"a": ["x sk-123 y", {"sk-123": "b"}], "n": 3}, ["sk-123"])
    assert out == {"a": ["x <redacted> y", {"<redacted>": "b"}], "n": 3}


async def test_cache_shares_one_probe_and_honours_the_ttl() -> None:
    now = [100.0]
    calls = 0

    async def fake_probe(settings: Settings) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"n": calls}

    cache = ProbeCache(ttl=5.0, probe=fake_probe, clock=lambda: now[0])
    settings = Settings()
    results = await asyncio.gather(*(cache.get(settings) for _ in range(10)))
    assert calls == 1 and all(r == {"n": 1} for r in results)
    now[0] += 4.9
    assert await cache.get(settings) == {"n": 1}
    now[0] += 0.2
    assert await cache.get(settings) == {"n": 2}
    assert await cache.get(Settings(deepgram_api_key="other")) == {"n": 3}  # other settings: probed afresh


async def test_cache_survives_a_cancelled_caller() -> None:
    async def slow_probe(settings: Settings) -> dict[str, Any]:
        await asyncio.sleep(0.1)
        return {"ok": True}

    cache = ProbeCache(probe=slow_probe)
    first = asyncio.create_task(cache.get(Settings()))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.get(Settings()))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == {"ok": True}
