"""What the log formatter masks: phone numbers, and nothing that only looks like one inside an identifier."""

from __future__ import annotations

import pytest

from gateway.logs import scrub


@pytest.mark.parametrize("text, masked", [
    ("caller +15550001234 rang", "caller +1555***1234 rang"),
    ("call me at 555-000-1234.", "call me at 5550***1234."),
    ("(555) 000 1234", "(5550***1234"),
    ("x +1 555 000 1234 y", "x +1555***1234 y"),
])
def test_phone_numbers_are_masked(text, masked):
    assert scrub(text) == masked


@pytest.mark.parametrize("text", [
    "CA53b84e66895555558587dad82a85a1c",  # a call sid with a long run of digits: found by it in the logs
    "MZ2439576c66d323ca32c409bd22b119f5",
    "2026-12-17T14:00:00-05:00",
    "start 2026-12-17, end 2026-12-18",
])
def test_identifiers_and_dates_are_left_whole(text):
    assert scrub(text) == text
