"""audio.framing: 160-byte frames, marks, and the bounded-lead playout model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.framing import FRAME_BYTES, FRAME_SECONDS, Mark, OutboundPacer

T0 = 1000.0  # a monotonic-clock-like start time


def frames_of(items: list[bytes | Mark]) -> list[bytes]:
    return [i for i in items if isinstance(i, bytes)]


def marks_of(items: list[bytes | Mark]) -> list[Mark]:
    return [i for i in items if isinstance(i, Mark)]


def audio(n: int, start: int = 0) -> bytes:
    return bytes((start + i) % 255 for i in range(n))  # never 0xFF: padding is recognisable


def test_constants() -> None:
    assert FRAME_BYTES == 160
    assert FRAME_SECONDS == 0.02


def test_exact_160_byte_frames_in_order() -> None:
    p = OutboundPacer(lead=10.0, batch=0.1)
    data = audio(160 * 5)
    p.push_audio(data)
    out = p.poll(T0)
    assert all(isinstance(f, bytes) and len(f) == FRAME_BYTES for f in out)
    assert b"".join(frames_of(out)) == data
    assert p.frames_sent == 5
    assert p.queued_bytes == 0


def test_partial_frame_is_held_until_more_audio() -> None:
    p = OutboundPacer(lead=10.0)
    p.push_audio(audio(100))
    assert p.poll(T0) == []
    assert p.queued_bytes == 100
    assert p.next_deadline() is None  # nothing releasable yet
    p.push_audio(audio(100, 100))
    out = p.poll(T0)
    assert out == [audio(160)]
    assert p.queued_bytes == 40


def test_flush_pads_partial_frame_with_silence() -> None:
    p = OutboundPacer(lead=10.0)
    p.push_audio(audio(200))
    p.flush()
    out = p.poll(T0)
    assert out == [audio(160), audio(40, 160) + b"\xff" * 120]
    p.flush()  # nothing pending: a no-op
    assert p.poll(T0) == []


def test_mark_pads_partial_frame_and_follows_its_audio() -> None:
    p = OutboundPacer(lead=10.0)
    p.push_audio(audio(170))
    p.push_mark("t1s0")
    p.push_audio(audio(160, 7))
    p.push_mark("t1s1")
    out = p.poll(T0)
    assert [type(i) for i in out] == [bytes, bytes, Mark, bytes, Mark]
    assert out[1] == audio(10, 160) + b"\xff" * 150
    assert isinstance(out[2], Mark) and out[2].name == "t1s0"
    # Playout: 2 frames from T0, then the third.
    assert out[2].plays_at == pytest.approx(T0 + 2 * FRAME_SECONDS)
    assert isinstance(out[4], Mark) and out[4].plays_at == pytest.approx(T0 + 3 * FRAME_SECONDS)


def test_mark_with_no_audio_before_it_is_due_now() -> None:
    p = OutboundPacer()
    p.push_mark("m")
    assert p.next_deadline() is not None
    assert p.poll(T0) == [Mark("m", T0)]


def test_mark_waits_for_the_frames_before_it() -> None:
    p = OutboundPacer(lead=0.1, batch=0.04)
    p.push_audio(audio(160 * 10))
    p.push_mark("end")
    first = p.poll(T0)
    assert marks_of(first) == []
    assert len(frames_of(first)) == 5  # 0.1 s lead = 5 frames
    now = T0
    released: list[bytes | Mark] = list(first)
    while not marks_of(released):
        deadline = p.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        released += p.poll(now)
    (mark,) = marks_of(released)
    assert len(frames_of(released)) == 10
    assert released[-1] == mark
    # Ten frames played back to back from T0.
    assert mark.plays_at == pytest.approx(T0 + 10 * FRAME_SECONDS)
    assert p.next_deadline() is None


def test_lead_bound_is_respected() -> None:
    lead = 0.3
    p = OutboundPacer(lead=lead, batch=0.1)
    p.push_audio(audio(160 * 500))  # a 10 s reply
    out = p.poll(T0)
    assert len(out) == 15  # exactly lead / frame
    assert p.playout_end - T0 <= lead + FRAME_SECONDS + 1e-9
    # Poll at odd times for a while: the buffered lead never exceeds lead + one frame.
    now = T0
    sent = len(out)
    for step in [0.013, 0.05, 0.1, 0.0, 0.27, 0.031, 0.1, 0.1, 0.5, 0.002] * 10:
        now += step
        sent += len(p.poll(now))
        assert p.playout_end - now <= lead + FRAME_SECONDS + 1e-9
    assert p.frames_sent == sent


def test_next_deadline_batches_frames() -> None:
    lead, batch = 0.3, 0.1
    p = OutboundPacer(lead=lead, batch=batch)
    assert p.next_deadline() is None
    p.push_audio(audio(160 * 200))
    deadline = p.next_deadline()
    assert deadline is not None and deadline <= T0  # nothing playing: due at once
    now = T0
    p.poll(now)
    sizes = []
    for _ in range(20):
        deadline = p.next_deadline()
        assert deadline is not None
        # The lead left at the deadline is lead - batch: the caller never runs dry in between.
        assert p.playout_end - deadline == pytest.approx(lead - batch)
        assert deadline > now
        now = deadline
        sizes.append(len(p.poll(now)))
    # ~batch / frame = 5 frames per wake-up, not one wake-up per frame.
    assert all(4 <= n <= 6 for n in sizes)
    assert sum(sizes) == pytest.approx(20 * 5, abs=2)
    assert p.underruns == 0


def test_clear_drops_everything() -> None:
    p = OutboundPacer()
    p.push_audio(audio(160 * 100 + 7))
    p.push_mark("a")
    p.poll(T0)
    assert p.busy(T0)
    p.clear()
    assert p.queued_bytes == 0
    assert p.next_deadline() is None
    assert p.poll(T0 + 0.01) == []
    assert not p.busy(T0 + 0.01)  # the carrier's buffer was cleared too: nothing playing
    assert p.playout_end < T0
    # A new reply after the clear starts playing now, not behind the dropped audio.
    p.push_audio(audio(160))
    p.push_mark("b")
    out = p.poll(T0 + 0.02)
    assert out[-1] == Mark("b", pytest.approx(T0 + 0.04))  # type: ignore[arg-type]
    assert p.underruns == 0


def test_busy_while_playing_at_the_caller() -> None:
    p = OutboundPacer()
    assert not p.busy(T0)
    p.push_audio(audio(50))
    assert p.busy(T0)  # a partial frame is still audio to play
    p.flush()
    p.poll(T0)
    assert p.queued_bytes == 0
    assert p.busy(T0 + 0.01)
    assert not p.busy(T0 + FRAME_SECONDS)


def test_underrun_counted_when_the_producer_falls_behind_mid_stream() -> None:
    p = OutboundPacer(lead=0.1, batch=0.04)
    p.push_audio(audio(160 * 2))
    p.poll(T0)  # plays until T0 + 0.04
    # TTS is slow: the next chunk arrives after the caller's buffer ran dry.
    p.push_audio(audio(160))
    p.poll(T0 + 0.1)
    assert p.underruns == 1
    # In time (buffer still holds audio): no underrun.
    p.push_audio(audio(160))
    p.poll(T0 + 0.11)
    assert p.underruns == 1


def test_no_underrun_across_a_mark_or_flush_boundary() -> None:
    p = OutboundPacer(lead=0.1, batch=0.04)
    p.push_audio(audio(160))
    p.push_mark("s0")
    p.poll(T0)
    p.push_audio(audio(160))  # next sentence, later: a pause, not an underrun
    p.poll(T0 + 1.0)
    p.flush()
    p.push_audio(audio(160))
    p.poll(T0 + 2.0)
    assert p.underruns == 0
    # A flush while frames are still queued: the boundary sits between them and later audio.
    # lead = one frame, so each poll releases one frame and the gap falls at the boundary.
    q = OutboundPacer(lead=FRAME_SECONDS, batch=0.01)
    q.push_audio(audio(160))
    q.flush()
    q.push_audio(audio(160))
    assert len(q.poll(T0)) == 1
    assert len(q.poll(T0 + 1.0)) == 1
    assert q.underruns == 0
    # The same without the flush is an underrun (audio arrived, but it went out too late).
    r = OutboundPacer(lead=FRAME_SECONDS, batch=0.01)
    r.push_audio(audio(320))
    r.poll(T0)
    r.poll(T0 + 1.0)
    assert r.underruns == 1
    # The first frame after a clear is no underrun either.
    c = OutboundPacer(lead=0.1, batch=0.04)
    c.push_audio(audio(160))
    c.poll(T0)
    c.clear()
    c.push_audio(audio(160))
    c.poll(T0 + 1.0)
    assert c.underruns == 0


def test_many_short_pushes() -> None:
    p = OutboundPacer(lead=100.0)
    data = audio(160 * 50 + 3)
    for i in range(0, len(data), 7):
        p.push_audio(data[i : i + 7])
    assert p.queued_bytes == len(data)
    p.flush()
    out = frames_of(p.poll(T0))
    assert len(out) == 51
    assert b"".join(out) == data + b"\xff" * (160 - 3)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        OutboundPacer(lead=0.0)
    with pytest.raises(ValueError):
        OutboundPacer(lead=0.3, batch=0.3)
    with pytest.raises(ValueError):
        OutboundPacer(lead=0.3, batch=-0.1)


def test_hundred_calls_polled_every_100ms_never_run_dry() -> None:
    # The gateway's schedule: 100 calls, each woken every 100 ms (not every frame). Each wake-up
    # hands out ~5 frames and the caller's buffer never empties. (Speed is for bench/, not here.)
    pacers = [OutboundPacer() for _ in range(100)]
    for p in pacers:
        p.push_audio(audio(8000 * 3))  # 3 s of reply each
    per_poll = []
    for tick in range(25):
        now = T0 + tick * 0.1
        for p in pacers:
            per_poll.append(len(p.poll(now)))
            assert p.playout_end - now >= p.lead - p.batch - 1e-9
    assert per_poll[:100] == [15] * 100  # the first wake-up fills the lead
    assert all(n == 5 for n in per_poll[100:])
    assert all(p.underruns == 0 for p in pacers)


# ------------------------------------------------------------------ properties

_op = st.one_of(
    st.tuples(st.just("audio"), st.binary(max_size=500)),
    st.tuples(st.just("mark"), st.text(max_size=4)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("poll"), st.floats(0.0, 0.5)),
)


@given(st.lists(_op, max_size=40))
def test_property_conserves_audio_and_mark_order(ops: list[tuple[str, object]]) -> None:
    """Frames concatenated == the pushed audio with 0xFF padding at each mark/flush, and each
    mark comes out after exactly the audio pushed before it."""
    p = OutboundPacer(lead=0.3, batch=0.1)
    expected = bytearray()
    expected_marks: list[tuple[str, int]] = []
    out: list[bytes | Mark] = []
    now = T0

    def pad() -> None:
        if len(expected) % FRAME_BYTES:
            expected.extend(b"\xff" * (FRAME_BYTES - len(expected) % FRAME_BYTES))

    for kind, arg in ops:
        if kind == "audio":
            assert isinstance(arg, bytes)
            p.push_audio(arg)
            expected += arg
        elif kind == "mark":
            assert isinstance(arg, str)
            p.push_mark(arg)
            pad()
            expected_marks.append((arg, len(expected)))
        elif kind == "flush":
            p.flush()
            pad()
        else:
            assert isinstance(arg, float)
            now += arg
            out += p.poll(now)
            assert p.playout_end - now <= 0.3 + FRAME_SECONDS + 1e-9
    # Drain.
    p.flush()
    pad()
    while (deadline := p.next_deadline()) is not None:
        now = max(now, deadline)
        out += p.poll(now)
    assert p.queued_bytes == 0

    got = bytearray()
    got_marks: list[tuple[str, int]] = []
    last_plays_at = float("-inf")
    for item in out:
        if isinstance(item, Mark):
            got_marks.append((item.name, len(got)))
            assert item.plays_at >= last_plays_at  # marks play in order
            last_plays_at = item.plays_at
        else:
            assert len(item) == FRAME_BYTES
            got += item
    assert bytes(got) == bytes(expected)
    assert got_marks == expected_marks
    assert p.frames_sent == len(got) // FRAME_BYTES
