"""audio.ring_buffer: absolute positions over a wrapping byte ring."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from audio.ring_buffer import RingBuffer


def test_empty() -> None:
    rb = RingBuffer(8)
    assert len(rb) == 0
    assert rb.total == 0
    assert rb.oldest == 0
    assert rb.read_since(0) == b""
    assert rb.read_last(4) == b""
    assert rb.read_range(0, 10) == b""


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RingBuffer(0)


def test_positions_before_and_after_wraparound() -> None:
    rb = RingBuffer(8)
    rb.write(b"abcde")
    assert (rb.total, rb.oldest, len(rb)) == (5, 0, 5)
    rb.write(b"fghij")  # wraps: 10 written, the newest 8 kept
    assert (rb.total, rb.oldest, len(rb)) == (10, 2, 8)
    assert rb.read_since(rb.oldest) == b"cdefghij"
    assert rb.read_last(3) == b"hij"
    assert rb.read_range(4, 7) == b"efg"  # spans the physical end of the buffer
    rb.write(b"k")
    assert rb.read_since(0) == b"defghijk"


def test_read_since_clips_to_what_is_retained() -> None:
    rb = RingBuffer(4)
    rb.write(b"0123456789")
    assert rb.oldest == 6
    assert rb.read_since(0) == b"6789"  # older bytes are gone: get what is left
    assert rb.read_since(8) == b"89"
    assert rb.read_since(10) == b""  # "now"
    assert rb.read_since(99) == b""  # the future
    assert rb.read_since(-5) == b"6789"


def test_read_range_clips_both_ends() -> None:
    rb = RingBuffer(4)
    rb.write(b"0123456789")
    assert rb.read_range(0, 8) == b"67"
    assert rb.read_range(7, 100) == b"789"
    assert rb.read_range(8, 8) == b""
    assert rb.read_range(9, 7) == b""
    assert rb.read_range(0, 3) == b""


def test_write_longer_than_capacity_keeps_the_newest() -> None:
    rb = RingBuffer(5)
    rb.write(b"xy")
    rb.write(bytes(range(100)))
    assert rb.total == 102
    assert rb.oldest == 97
    assert rb.read_since(0) == bytes(range(95, 100))
    rb.write(b"z")
    assert rb.read_last(100) == bytes(range(96, 100)) + b"z"


def test_write_exactly_capacity_and_empty_write() -> None:
    rb = RingBuffer(4)
    rb.write(b"ab")
    rb.write(b"wxyz")
    assert rb.read_since(0) == b"wxyz"
    rb.write(b"")
    assert (rb.total, len(rb)) == (6, 4)


def test_read_last_edge_cases() -> None:
    rb = RingBuffer(4)
    rb.write(b"abc")
    assert rb.read_last(0) == b""
    assert rb.read_last(-1) == b""
    assert rb.read_last(10) == b"abc"


def test_clear_keeps_positions_absolute() -> None:
    rb = RingBuffer(4)
    rb.write(b"abcdef")
    mark = rb.total
    rb.clear()
    assert len(rb) == 0
    assert rb.total == 6  # monotonic: a position taken before the clear keeps its meaning
    assert rb.oldest == 6
    assert rb.read_since(0) == b""
    rb.write(b"gh")
    assert rb.read_since(mark) == b"gh"
    assert rb.read_since(0) == b"gh"


def test_accepts_bytes_like_input() -> None:
    rb = RingBuffer(6)
    rb.write(bytearray(b"ab"))
    rb.write(memoryview(b"cdefgh"))
    assert rb.read_since(0) == b"cdefgh"
    assert isinstance(rb.read_since(0), bytes)


class RingBufferVsBytes(RuleBasedStateMachine):
    """The ring behaves exactly like 'the last `capacity` bytes of everything written'."""

    def __init__(self) -> None:
        super().__init__()
        self.rb: RingBuffer | None = None
        self.capacity = 0
        self.history = b""  # everything ever written
        self.cleared_at = 0  # absolute position of the last clear()

    @precondition(lambda self: self.rb is None)
    @rule(capacity=st.integers(1, 64))
    def create(self, capacity: int) -> None:
        self.rb = RingBuffer(capacity)
        self.capacity = capacity

    def _oldest(self) -> int:
        return max(len(self.history) - self.capacity, self.cleared_at)

    @precondition(lambda self: self.rb is not None)
    @rule(data=st.binary(max_size=150))
    def write(self, data: bytes) -> None:
        assert self.rb is not None
        self.rb.write(data)
        self.history += data

    @precondition(lambda self: self.rb is not None)
    @rule()
    def clear(self) -> None:
        assert self.rb is not None
        self.rb.clear()
        self.cleared_at = len(self.history)

    @precondition(lambda self: self.rb is not None)
    @rule(position=st.integers(-10, 700))
    def read_since(self, position: int) -> None:
        assert self.rb is not None
        assert self.rb.read_since(position) == self.history[max(position, self._oldest()) :]

    @precondition(lambda self: self.rb is not None)
    @rule(start=st.integers(-10, 700), end=st.integers(-10, 700))
    def read_range(self, start: int, end: int) -> None:
        assert self.rb is not None
        lo = max(start, self._oldest())
        hi = min(end, len(self.history))
        assert self.rb.read_range(start, end) == (self.history[lo:hi] if lo < hi else b"")

    @precondition(lambda self: self.rb is not None)
    @rule(n=st.integers(-2, 80))
    def read_last(self, n: int) -> None:
        assert self.rb is not None
        held = self.history[self._oldest() :]
        assert self.rb.read_last(n) == (held[-n:] if n > 0 else b"")

    @invariant()
    def positions(self) -> None:
        if self.rb is not None:
            assert self.rb.total == len(self.history)
            assert self.rb.oldest == self._oldest()
            assert len(self.rb) == self.rb.total - self.rb.oldest


RingBufferVsBytes.TestCase.settings = settings(max_examples=150, stateful_step_count=30)
test_ring_buffer_matches_reference_model = RingBufferVsBytes.TestCase


@given(st.integers(1, 50), st.lists(st.binary(max_size=120), max_size=20))
def test_property_content_is_the_tail_of_the_stream(capacity: int, writes: list[bytes]) -> None:
    rb = RingBuffer(capacity)
    for w in writes:
        rb.write(w)
    stream = b"".join(writes)
    assert rb.read_since(0) == stream[-capacity:]
