"""The benchmark tools' tests: they run the real tools against the provider emulators."""

from __future__ import annotations

import asyncio

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench: runs a benchmark tool end to end (tens of seconds)")


def cloud_engines_wired() -> bool:
    """Whether the gateway builds its cloud engines from the environment (so `--spawn` has a gateway to
    measure). Asked of the real `Engines`, not guessed from the source."""
    from providers.settings import Settings
    from providers.engines import Engines

    settings = Settings.from_env({}, local_engines=False, deepgram_api_key="dg-probe", openai_api_key="sk-probe",
                                 elevenlabs_api_key="xi-probe", deepgram_base_url="ws://127.0.0.1:9",
                                 openai_base_url="http://127.0.0.1:9/v1", elevenlabs_base_url="http://127.0.0.1:9")
    engines = Engines(settings)

    async def load() -> bool:
        try:
            await asyncio.wait_for(engines.load(), 20)
            described = engines.describe()
        finally:
            closing = getattr(engines, "aclose", None)
            if closing is not None:
                await closing()
        return ("deepgram" in str(described.get("stt")) and "elevenlabs" in str(described.get("tts"))
                and described.get("llm") is not None)

    try:
        return asyncio.run(load())
    except Exception:
        return False


@pytest.fixture(scope="session")
def cloud_path() -> None:
    if not cloud_engines_wired():
        pytest.skip("providers/engines.py does not build the Deepgram/OpenAI/ElevenLabs engines from the "
                    "environment yet: there is no cloud path to benchmark")
