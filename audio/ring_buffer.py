"""A fixed-size byte ring addressed by absolute stream position.

The call keeps the last few seconds of caller audio (mu-law, 1 byte = 1 sample at 8 kHz) here
for two jobs:

- utterance pre-roll: the VAD confirms speech ~120 ms after it began and reports where it began
  as an absolute sample position; the audio from there (plus a margin) is read back so the STT
  engine hears the first syllable;
- replay after an STT reconnect: audio sent since the last position the engine acknowledged is
  read back and re-sent, so nothing the caller said is lost to a dropped socket.

Both want absolute positions ("byte 123456 of this call"), not offsets into the ring, so positions
stay valid while the ring wraps: `total` counts every byte ever written and never goes back,
`oldest` is the position of the oldest byte still held. Reads clip to what is retained rather than
raising: a caller asking for audio that has already been overwritten gets what is left, which is
the useful answer in both jobs above.

Storage is one preallocated bytearray; a write is at most two slice copies, whatever its size.
"""

from __future__ import annotations

__all__ = ["RingBuffer"]


class RingBuffer:
    """The newest `capacity` bytes of an unbounded byte stream."""

    __slots__ = ("_buf", "_capacity", "_total", "_oldest", "_view")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._capacity = capacity
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._total = 0  # bytes ever written = absolute position of the next byte
        self._oldest = 0  # absolute position of the oldest byte retained

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def total(self) -> int:
        """Bytes ever written: the absolute position just after the newest byte."""
        return self._total

    @property
    def oldest(self) -> int:
        """Absolute position of the oldest byte still held (== total when empty)."""
        return self._oldest

    def __len__(self) -> int:
        return self._total - self._oldest

    def write(self, data: bytes) -> None:
        """Append `data`; when it overflows the ring, the oldest bytes are dropped."""
        n = len(data)
        if n == 0:
            return
        cap = self._capacity
        src = memoryview(data)
        if n > cap:
            # Only the newest `cap` bytes can survive; skip copying the rest.
            src = src[n - cap :]
        m = len(src)
        # The byte at absolute position p lives at p % capacity.
        start = (self._total + n - m) % cap
        first = min(m, cap - start)
        self._view[start : start + first] = src[:first]
        if first < m:
            self._view[: m - first] = src[first:]
        self._total += n
        self._oldest = max(self._oldest, self._total - cap)

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes at absolute positions [start, end), clipped to what is retained."""
        start = max(start, self._oldest)
        end = min(end, self._total)
        if start >= end:
            return b""
        cap = self._capacity
        i = start % cap
        n = end - start
        if i + n <= cap:
            return bytes(self._view[i : i + n])
        return bytes(self._view[i:]) + bytes(self._view[: i + n - cap])

    def read_since(self, position: int) -> bytes:
        """Bytes from absolute `position` up to now, clipped to what is retained."""
        return self.read_range(position, self._total)

    def read_last(self, n: int) -> bytes:
        """The newest `n` bytes (fewer if fewer are held)."""
        if n <= 0:
            return b""
        return self.read_range(self._total - n, self._total)

    def clear(self) -> None:
        """Forget the held bytes. `total` is kept: positions stay absolute and monotonic, so a
        position taken before the clear still means the same point in the stream."""
        self._oldest = self._total
