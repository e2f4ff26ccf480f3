"""Incremental `text/event-stream` decoding: the `data` of each event, nothing else.

The OpenAI SDK decodes every streamed chunk into pydantic models; at a hundred calls that was a
sixth of the gateway's CPU (bench/PROFILE.md). The Chat Completions stream only needs each event's
`data` field, parsed as JSON by the caller. Lines follow the WHATWG rules: `\\r\\n`, `\\n` or `\\r`
end a line, a blank line ends an event, `data:` lines of one event join with `\\n`, one space after
the colon is dropped, comments (`: keep-alive`) and the other fields are ignored.
"""

from __future__ import annotations


class SseDataDecoder:
    """Feed body bytes as they arrive; get back the `data` of every event completed so far."""

    __slots__ = ("_tail", "_data")

    def __init__(self) -> None:
        self._tail = b""  # an unfinished line, carried to the next chunk
        self._data: list[bytes] = []  # `data` lines of the event being read

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._tail + chunk if self._tail else chunk
        hold = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe the first half of `\r\n`: decide when the next byte comes
                buf, hold = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._tail = lines.pop() + hold
        events: list[bytes] = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self) -> list[bytes]:
        """The end of the body: a last event the server did not end with a blank line still counts."""
        events: list[bytes] = []
        if self._tail:
            self._line(self._tail.rstrip(b"\r"), events)
            self._tail = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            self._data.append(b"")
