"""The dashboard and softphone in a real headless Chromium: log in, call the agent with a fake
microphone playing synthesized speech, hear the reply, and see the call's transcript live and in
the history. Also checks the page's mu-law codec and 8 kHz downsampler against the gateway's."""

from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from audio import mulaw
from audio.resample import resample
from tests.support import ROOT
from tests.web.web_helpers import DASHBOARD_TOKEN

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")

CHROMIUM = "/usr/bin/chromium"  # Debian's browser: never `playwright install`
SENTENCE = "Hello, I would like to book an appointment"
WAV_RATE = 48000
# Chromium's fake microphone loops the file. Lead silence lets the greeting finish first; the long
# tail leaves room for the reply (slow on a busy 2-core machine) before the sentence comes round again.
LEAD_SILENCE_S = 4.0
TAIL_SILENCE_S = 25.0
CALL_TIMEOUT_MS = 75_000
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed")


@pytest.fixture(scope="module")
def caller_wav(piper, tmp_path_factory) -> Path:
    """The caller's words as a 48 kHz 16-bit mono WAV, for --use-file-for-fake-audio-capture."""
    speech = resample(piper.synthesize_pcm(SENTENCE, steady=True), piper.sample_rate, WAV_RATE)
    silence = lambda seconds: np.zeros(int(WAV_RATE * seconds), dtype=np.int16)  # noqa: E731
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech, silence(TAIL_SILENCE_S)]).astype(np.int16)
    path = tmp_path_factory.mktemp("softphone") / "caller.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(audio.tobytes())
    return path


@pytest.fixture(scope="module")
def browser_context(caller_wav, tmp_path_factory) -> Iterator:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 1000},
            args=[
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={caller_wav}",
            ],
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context) -> Iterator:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "status of 401" not in msg.text else None)  # 401: the anonymous login probe
    page.errors = errors
    try:
        yield page
    finally:
        page.close()


def test_the_page_codec_matches_the_gateway_codec(page, dashboard_gateway):
    page.goto(dashboard_gateway.url + "/")
    tables = page.evaluate("""async () => {
        const m = await import("/static/capture-worklet.js");
        return { encode: Array.from(m.ENCODE_TABLE), decode: Array.from(m.DECODE_TABLE) };
    }""")
    every_int16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    assert bytes(tables["encode"]) == mulaw.encode(every_int16)  # indexed by the int16's bit pattern
    assert tables["decode"] == mulaw.decode(bytes(range(256))).tolist()
    assert page.errors == []


@pytest.mark.parametrize("rate", [48000, 44100])
def test_the_page_downsamples_to_8khz_without_aliasing(page, dashboard_gateway, rate):
    page.goto(dashboard_gateway.url + "/")
    script = """async ([rate, freq]) => {
        const m = await import("/static/capture-worklet.js");
        const encoder = new m.MulawEncoder(rate);
        const input = new Float32Array(rate);  // one second
        for (let i = 0; i < input.length; i++) input[i] = 0.5 * Math.sin(2 * Math.PI * freq * i / rate);
        const out = [];
        for (let i = 0; i < input.length; i += 128) {  // render quanta, as the worklet gets them
            for (const { frame } of encoder.push(input.subarray(i, i + 128))) out.push(...frame);
        }
        return out;
    }"""

    def tone(freq: float) -> np.ndarray:
        encoded = bytes(page.evaluate(script, [rate, freq]))
        assert len(encoded) % 160 == 0 and len(encoded) >= 7800  # whole 20 ms frames, ~1 s of audio
        return mulaw.decode(encoded).astype(np.float64)[800:]  # skip the filter's start-up

    passband = tone(1000.0)
    spectrum = np.abs(np.fft.rfft(passband * np.hanning(len(passband))))
    peak_hz = np.fft.rfftfreq(len(passband), 1 / 8000)[int(np.argmax(spectrum))]
    assert abs(peak_hz - 1000.0) < 10
    rms = float(np.sqrt(np.mean(passband**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2) * 32768, rel=0.08)
    # 6 kHz cannot exist at 8 kHz: without the low-pass it would fold back to 2 kHz at full level.
    aliased = tone(6000.0)
    assert float(np.sqrt(np.mean(aliased**2))) < 0.03 * rms
    assert page.errors == []


def test_the_speaker_echoes_marks_like_twilio(page, dashboard_gateway):
    """A mark is echoed once the audio queued before it has played (at once if none is queued);
    `clear` drops the queued audio and echoes every pending mark immediately."""
    page.goto(dashboard_gateway.url + "/")
    page.click("body")  # a user gesture, so the AudioContext may start
    result = page.evaluate("""async () => {
        const { Speaker } = await import("/static/softphone.js");
        const context = new AudioContext();
        await context.resume();
        const t0 = performance.now();
        const echoed = [];
        const speaker = new Speaker(context, (name) => echoed.push([name, performance.now() - t0]));
        const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
        const audio = (ms) => new Uint8Array(8 * ms).fill(0x90);  // mu-law, 8 samples per ms
        speaker.mark("idle");
        speaker.play(audio(200));
        speaker.play(audio(200));
        speaker.mark("after-400ms");
        await sleep(700);
        speaker.play(audio(1000));
        speaker.mark("pending-1");
        speaker.play(audio(200));
        speaker.mark("pending-2");
        await sleep(100);
        const clearedAt = performance.now() - t0;
        const dropped = speaker.clear();
        await sleep(50);
        const playedSamples = speaker.playedSamples;
        await context.close();
        return { echoed, clearedAt, dropped, playedSamples };
    }""")
    names = [name for name, _ in result["echoed"]]
    assert names == ["idle", "after-400ms", "pending-1", "pending-2"]
    at = dict(result["echoed"])
    assert at["idle"] < 50  # nothing buffered: straight away
    assert 380 <= at["after-400ms"] < 700  # after its 400 ms of audio played, not on arrival
    # The clear came ~100 ms into a 1.2 s stretch: both marks echo at once, long before it would end.
    assert result["clearedAt"] <= at["pending-1"] <= at["pending-2"] < result["clearedAt"] + 30
    assert result["dropped"] == 2
    assert result["playedSamples"] == 3200  # the first 400 ms; cleared audio never counts as played
    assert page.errors == []


def test_call_the_agent_from_the_dashboard(page, dashboard_gateway):
    page.goto(dashboard_gateway.url + "/")
    # Locked: the login form, and no data before it.
    page.wait_for_selector("[data-testid=login-token]")
    assert page.is_hidden("#app")
    page.fill("[data-testid=login-token]", "not the token")
    page.click("[data-testid=login-button]")
    page.wait_for_selector("#login-error:has-text('not accepted')")
    page.fill("[data-testid=login-token]", DASHBOARD_TOKEN)
    page.click("[data-testid=login-button]")
    page.wait_for_selector("[data-testid=feed-state]:has-text('live')", timeout=10_000)
    page.wait_for_selector("[data-testid=health-summary]:has-text('engines ready')")
    assert DASHBOARD_TOKEN not in page.evaluate("JSON.stringify(sessionStorage)")  # only short-lived tokens kept

    page.click("[data-testid=call-button]")
    page.wait_for_selector("[data-testid=phone-state]:has-text('in call')", timeout=15_000)
    # The greeting plays first; then the fake microphone says the sentence and the agent answers.
    # A caller turn whose reply was heard (the gateway got our mark echoes) is on the live transcript.
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid=transcript] .caller-turn')].some(turn =>
               /appointment/i.test(turn.querySelector('[data-testid=caller-text]').textContent) &&
               turn.dataset.heard.length > 0)""",
        timeout=CALL_TIMEOUT_MS,
    )
    call_sid = page.get_attribute("[data-testid=transcript-title]", "data-sid")
    assert call_sid and call_sid.startswith("CA")
    assert "live" in page.inner_text("[data-testid=transcript-title]")
    greeting = page.inner_text("[data-testid=transcript] .greeting")
    assert "Agent" in greeting
    turn = page.locator("[data-testid=transcript] .caller-turn", has_text="ppointment").first
    assert turn.locator("[data-testid=agent-text]").inner_text().strip()
    # The softphone played the greeting and the reply, and echoed the marks.
    page.wait_for_function("() => Number(document.querySelector('[data-testid=played]').dataset.playedMs) > 3000")
    assert int(page.inner_text("[data-testid=marks-echoed]")) >= 2
    # The live call is listed, and its latency split is drawn (a stacked bar per turn).
    assert call_sid[:8] in page.inner_text("[data-testid=live-calls]")
    assert page.locator("[data-testid=latency-chart] rect[data-segment=stt_ms]").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Hang up: the call ends, leaves the live list, and its stored transcript opens from the history.
    page.click("[data-testid=call-button]")
    page.wait_for_selector("[data-testid=phone-state]:has-text('call ended')")
    page.wait_for_selector(f"[data-testid=history] tr[data-sid='{call_sid}']", timeout=15_000)
    page.wait_for_function(f"() => !document.querySelector(\"[data-testid=live-calls] li[data-sid='{call_sid}']\")")
    page.click(f"[data-testid=history] tr[data-sid='{call_sid}']")
    page.wait_for_selector("[data-testid=transcript-title]:has-text('stop')")
    assert "appointment" in page.inner_text("[data-testid=transcript]").lower()
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True)
    assert page.errors == []
