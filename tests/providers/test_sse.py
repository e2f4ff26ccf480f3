"""The event-stream decoder under every way a body can be cut into reads."""

from __future__ import annotations

import pytest

from providers.sse import SseDataDecoder

BODY = (b'data: {"a":1}\n\n'
        b": keep-alive\n\n"
        b'data: {"b":2}\r\n\r\n'
        b"event: ping\nid: 7\nretry: 100\ndata:no-space\n\n"
        b"data: line one\ndata: line two\r\r"
        b"data\n\n"
        b"data: [DONE]\n\n")
EVENTS = [b'{"a":1}', b'{"b":2}', b"no-space", b"line one\nline two", b"", b"[DONE]"]


def decode(chunks: list[bytes]) -> list[bytes]:
    decoder = SseDataDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.close()


def test_whole_body() -> None:
    assert decode([BODY]) == EVENTS


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_any_split_point(cut: int) -> None:
    assert decode([BODY[:cut], BODY[cut:]]) == EVENTS


def test_byte_by_byte() -> None:
    assert decode([BODY[i:i + 1] for i in range(len(BODY))]) == EVENTS


def test_crlf_split_between_reads_is_one_line_end() -> None:
    assert decode([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"]) == [b"x", b"y"]


def test_unterminated_last_event_still_counts() -> None:
    assert decode([b"data: a\n\ndata: tail"]) == [b"a", b"tail"]


def test_comments_and_other_fields_alone_make_no_event() -> None:
    assert decode([b": hello\n\nevent: x\n\nid: 3\n\n"]) == []
