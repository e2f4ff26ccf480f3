"""Configuration: read once from the environment, keys stripped, bad values named, secrets never shown."""

from __future__ import annotations

import pytest

from providers.settings import ConfigError, Settings


def test_defaults_and_overrides():
    s = Settings.from_env({})
    assert s.port == 8000 and s.latency_optimization_mode == "enabled" and not s.deepgram_enabled
    s = Settings.from_env({"PORT": "9000", "WEB_CONCURRENCY": "3", "PUBLIC_URL": "https://gw.example.com"})
    assert (s.port, s.workers, s.media_stream_url) == (9000, 3, "wss://gw.example.com/twilio/media")


def test_keys_are_stripped_of_stray_whitespace():
    s = Settings.from_env({"DEEPGRAM_API_KEY": "  dg-key\n", "OPENAI_API_KEY": "\tsk-key "})
    assert s.deepgram_api_key == "dg-key" and s.openai_api_key == "sk-key" and s.deepgram_enabled


@pytest.mark.parametrize(("env", "message"), [
    ({"PORT": "abc"}, "PORT must be a whole number"),
    ({"PORT": "0"}, "PORT"),
    ({"LATENCY_OPTIMIZATION_MODE": "fast"}, "LATENCY_OPTIMIZATION_MODE must be one of"),
    ({"PUBLIC_URL": "gw.example.com"}, "PUBLIC_URL"),
    ({"DEEPGRAM_BASE_URL": "127.0.0.1:9000"}, "DEEPGRAM_BASE_URL"),
    ({"TWILIO_VALIDATE_SIGNATURES": "maybe"}, "true or false"),
])
def test_malformed_values_are_clear_startup_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_secrets_never_appear_in_errors_or_the_redacted_view():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"OPENAI_API_KEY": "sk-abc def"})
    assert "sk-abc" not in str(info.value)
    s = Settings.from_env({"OPENAI_API_KEY": "sk-secret", "TWILIO_AUTH_TOKEN": "tok"})
    redacted = s.redacted()
    assert redacted["openai_api_key"] == "set" and redacted["twilio_auth_token"] == "set"
    assert "sk-secret" not in str(redacted) and set(s.secrets()) == {"sk-secret", "tok"}
