"""Outbound framing and pacing of reply audio, sans-I/O (time is passed in).

Why pace at all: Twilio plays whatever we send, in order, from a buffer we cannot inspect except
through marks. If a 10 s reply were sent as fast as TTS produced it, a caller who interrupts
after 1 s would still hear up to 9 s until our `clear` arrives, and "what the caller heard" could
only be guessed. So reply audio is released no further ahead of real time than `lead` seconds:
Twilio holds a few hundred ms (enough to ride out network jitter), an interruption stops the
audio within about `lead`, and each mark's `plays_at` is a tight estimate of when the caller
heard the audio before it.

The playout model: `playout_end` is when the audio sent so far finishes playing at the caller.
Before each frame, `playout_end = max(playout_end, now)` (if the caller's buffer ran dry, the
new frame starts playing now, not in the past), then it advances by one frame. A frame is
released only while `playout_end - now < lead`, so after a poll the caller never has more than
`lead` + one frame buffered. A mark goes out as soon as every frame before it has, stamped with
when that audio will have played.

Batching: waking up every 20 ms per call for one frame is wasteful with hundreds of calls.
`next_deadline()` asks to be polled again only when the buffered lead has shrunk by `batch`
seconds, and that poll tops it back up with ~batch worth of frames.

Underruns: a frame sent after the caller's buffer had run dry (`playout_end < now`) is a gap the
caller hears. It only counts as an underrun when it happens mid-stream, that is when no mark,
`flush()` or `clear()` lies between it and the previous frame: the audio producer (TTS) fell
behind real time. A gap after a mark or flush is the normal pause between replies or sentences.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["FRAME_BYTES", "FRAME_SECONDS", "Mark", "OutboundPacer"]

# Twilio Media Streams carry 8 kHz mu-law; 160 bytes = 20 ms is the frame size Twilio itself sends
# and the granularity at which its playback buffer and marks work.
FRAME_BYTES = 160
FRAME_SECONDS = 0.02

_PAD_BYTE = 0xFF  # mu-law digital silence (see audio.mulaw.SILENCE_BYTE)

# Slack in the lead comparison: playout_end is advanced by repeated += 0.02, which is not exact
# in binary floating point, and 15 frames from t should fill a 0.3 s lead exactly, not 16.
_EPSILON = 1e-9

# Default lead: Twilio's jitter needs ~100-200 ms of buffer; more than ~300 ms makes barge-in feel
# sluggish (the caller hears up to `lead` after interrupting) and blurs the heard-text estimate.
DEFAULT_LEAD = 0.3
# Default batch: one wake-up per call every 100 ms (5 frames) instead of every 20 ms, while the
# buffer never drops below lead - batch = 200 ms between polls.
DEFAULT_BATCH = 0.1


@dataclass(frozen=True, slots=True)
class Mark:
    """A named point in the outbound audio (sent to Twilio as a `mark` message).

    `plays_at`: estimated time (same clock as `now`) at which the audio before the mark finishes
    playing at the caller, i.e. when Twilio should echo the mark back.
    """

    name: str
    plays_at: float


class _Boundary:
    """Queue sentinel left by `flush()`: the frames after it start a new stream segment."""

    __slots__ = ()


_BOUNDARY = _Boundary()

# A queued item: a 160-byte frame, a mark's name (stamped when released), or a boundary.
_Item = bytes | str | _Boundary


class OutboundPacer:
    """A queue of reply audio and marks, handed out as 160-byte frames at a bounded lead."""

    __slots__ = (
        "_lead",
        "_batch",
        "_queue",
        "_partial",
        "_queued_frames",
        "_playout_end",
        "_mid_stream",
        "_last_poll",
        "_frames_sent",
        "_underruns",
    )

    def __init__(self, lead: float = DEFAULT_LEAD, batch: float = DEFAULT_BATCH) -> None:
        if lead <= 0:
            raise ValueError(f"lead must be > 0, got {lead}")
        if not 0 <= batch < lead:
            # batch >= lead would wait until the caller's buffer is empty: a gap every batch.
            raise ValueError(f"batch must be in [0, lead), got {batch} with lead {lead}")
        self._lead = lead
        self._batch = batch
        self._queue: deque[_Item] = deque()
        self._partial = bytearray()  # tail shorter than a frame, waiting for more audio
        self._queued_frames = 0
        # 0.0 stands for "nothing playing": any reading of a monotonic clock is later.
        self._playout_end = 0.0
        self._mid_stream = False  # the last frame sent belongs to a segment still being fed
        self._last_poll = 0.0
        self._frames_sent = 0
        self._underruns = 0

    # ------------------------------------------------------------------ input

    def push_audio(self, data: bytes) -> None:
        """Queue mu-law audio of any length; a trailing partial frame waits for more."""
        if not data:
            return
        buf = self._partial + data if self._partial else data
        n_frames = len(buf) // FRAME_BYTES
        cut = n_frames * FRAME_BYTES
        if n_frames:
            with memoryview(buf) as view:  # one copy per frame, none for the whole buffer
                self._queue.extend(
                    bytes(view[i : i + FRAME_BYTES]) for i in range(0, cut, FRAME_BYTES)
                )
            self._queued_frames += n_frames
        self._partial = bytearray(buf[cut:])

    def push_mark(self, name: str) -> None:
        """Queue a mark right after the audio queued so far (a partial frame is padded)."""
        self._pad_partial()
        self._queue.append(name)

    def flush(self) -> None:
        """End of a segment: pad and release any partial frame."""
        self._pad_partial()
        if not self._queue:
            self._mid_stream = False
        elif not isinstance(self._queue[-1], (str, _Boundary)):
            self._queue.append(_BOUNDARY)

    def clear(self) -> None:
        """Barge-in: drop everything queued; nothing is playing any more.

        The gateway sends Twilio a `clear` at the same time, which empties the caller's buffer,
        so the playout estimate restarts from nothing. Counters are kept (they are metrics).
        """
        self.drop_queued()
        self._playout_end = 0.0
        self._mid_stream = False

    def drop_queued(self) -> None:
        """Drop what is queued and not sent (a reply dropped before any of it went out). What was sent
        plays on, so the playout estimate stands."""
        self._queue.clear()
        self._partial.clear()
        self._queued_frames = 0

    def _pad_partial(self) -> None:
        if self._partial:
            self._partial.extend(bytes((_PAD_BYTE,)) * (FRAME_BYTES - len(self._partial)))
            self._queue.append(bytes(self._partial))
            self._queued_frames += 1
            self._partial.clear()

    # ------------------------------------------------------------------ output

    def poll(self, now: float) -> list[bytes | Mark]:
        """Everything due at `now`, in order: 160-byte frames and stamped marks."""
        self._last_poll = now
        out: list[bytes | Mark] = []
        queue = self._queue
        lead = self._lead
        playout_end = self._playout_end
        while queue:
            item = queue[0]
            if type(item) is bytes:
                if playout_end - now >= lead - _EPSILON:
                    break
                if playout_end < now:
                    if self._mid_stream:
                        self._underruns += 1
                    playout_end = now
                playout_end += FRAME_SECONDS
                self._mid_stream = True
                self._queued_frames -= 1
                self._frames_sent += 1
                out.append(item)
            elif isinstance(item, str):
                # max(): a mark after audio that has already played is due now, not in the past.
                out.append(Mark(item, max(playout_end, now)))
                self._mid_stream = False
            else:
                self._mid_stream = False
            queue.popleft()
        self._playout_end = playout_end
        return out

    def next_deadline(self) -> float | None:
        """When to call `poll` next: None if nothing is queued, else the time at which the
        buffered lead will have shrunk to `lead - batch` (already past if poll is due now)."""
        if not self._queue:
            return None
        if type(self._queue[0]) is not bytes:
            return self._last_poll  # a mark or boundary at the head is due immediately
        return self._playout_end - (self._lead - self._batch)

    # ------------------------------------------------------------------ state

    @property
    def lead(self) -> float:
        return self._lead

    @property
    def batch(self) -> float:
        return self._batch

    @property
    def queued_bytes(self) -> int:
        """Audio bytes waiting to be released (including a held partial frame and padding)."""
        return self._queued_frames * FRAME_BYTES + len(self._partial)

    @property
    def playout_end(self) -> float:
        """When the audio sent so far finishes playing at the caller (0.0: nothing sent since
        creation or the last clear)."""
        return self._playout_end

    def busy(self, now: float) -> bool:
        """Audio is queued here or still playing at the caller."""
        return self._queued_frames > 0 or bool(self._partial) or self._playout_end > now

    @property
    def frames_sent(self) -> int:
        return self._frames_sent

    @property
    def underruns(self) -> int:
        return self._underruns
