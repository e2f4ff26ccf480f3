"""A model VAD for the decisions the energy VAD cannot take alone: Silero VAD (v6, ONNX), with the
agent's own echo taken out first.

The energy VAD hears every sound that stands out from the line's noise: a cough, a door, traffic,
music on hold, the agent's own voice on a speakerphone. A speech model tells speech from the rest,
but it costs ~0.15 ms of CPU per 32 ms window (two looks, see `SpeechModel.probabilities`), so the
call core asks for it only where it takes a decision (an onset that would interrupt the agent or
start a turn, re-checks while such an onset lasts, the end of speech under a noise bed) and never
per frame: `gateway.session` sends an `AnalyzeSpeech` action, the media endpoint runs
`SpeechDetector.analyze` in a worker thread (onnxruntime releases the GIL), and the result comes
back as a `SpeechAnalyzed` event.

The weights are the Silero VAD v6 that faster-whisper's wheel ships (faster-whisper is pinned in the
`local` extra; the file's sha256 is checked at load; MIT licence). That model takes 16 kHz audio in
512-sample windows with 64 samples of context and processes a whole sequence of windows in one run,
so the phone's 8 kHz is resampled once per request (soxr, band-limited) and a request of 0.5 s is one
model call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio import mulaw
from audio.echo import cancel_echo
from audio.resample import int16_to_float32, resample
from providers.local_models import PinnedFile, ModelFileError, verify_files

MODEL_RATE = 16000
WINDOW = 512  # samples per decision window at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous window the v6 model sees with each window
WINDOW_8K = WINDOW * 8000 // MODEL_RATE  # the same 32 ms of the phone's audio
# faster-whisper==1.2.1 ships it as faster_whisper/assets/silero_vad_v6.onnx.
SILERO_FILE = PinnedFile("silero_vad_v6.onnx", "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2")


def silero_model_dir() -> Path:
    try:
        import faster_whisper
    except ImportError as exc:
        raise ModelFileError("the Silero VAD ships with faster-whisper: pip install 'voicegate[local]'") from exc
    return Path(faster_whisper.__file__).parent / "assets"


@dataclass(frozen=True, slots=True)
class SpeechAnalysis:
    """Speech probability per 32 ms window of the analysed audio (window i covers samples
    [i * 256, (i + 1) * 256) of the 8 kHz request), after the echo was taken out when a reference was
    given; and how much of the inbound energy that echo explained."""

    probabilities: tuple[float, ...]
    levels_dbfs: tuple[float, ...] = ()  # each window's level after the echo was taken out
    echo_erle_db: float = 0.0
    echo_delay_ms: float = 0.0


def to_model_rate(pcm8k: np.ndarray) -> np.ndarray:
    """8 kHz int16 audio as the model's 16 kHz float32, exactly twice as many samples (band-limited)."""
    n = len(pcm8k) * 2
    x = int16_to_float32(resample(np.asarray(pcm8k, dtype=np.int16), 8000, MODEL_RATE))
    return np.pad(x[:n], (0, max(0, n - len(x))))


def mean_of_looks(aligned: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Each window's score from two looks: its own, and the mean of the second look's windows over it
    (half window k spans windows k and k + 1; at either edge only one lies over it)."""
    around = np.empty(len(aligned), dtype=np.float32)
    around[0], around[-1] = half[0], half[-1]
    around[1:-1] = (half[:-1] + half[1:]) / 2
    return (aligned + around) / 2


class SpeechModel:
    """Silero VAD v6 on onnxruntime, one session per process (thread-safe for `run`)."""

    _shared: "SpeechModel | None" = None
    _lock = threading.Lock()

    def __init__(self, directory: Path | None = None) -> None:
        import onnxruntime

        directory = directory or silero_model_dir()
        verify_files(directory, (SILERO_FILE,))
        options = onnxruntime.SessionOptions()
        # One thread per run: requests come from many calls at once, each short; a run spread over
        # both cores would only contend with the event loop and whisper.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(str(directory / SILERO_FILE.name),
                                                     providers=["CPUExecutionProvider"], sess_options=options)

    @classmethod
    def shared(cls) -> "SpeechModel":
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def probabilities(self, pcm8k: np.ndarray, looks: int = 2) -> np.ndarray:
        """Speech probability of each whole 32 ms window of 8 kHz int16 audio (a partial tail is dropped).

        Each window's score is the mean of two looks: the windows as they fall, and a second sequence half
        a window later (the two shifted windows that overlap it, averaged). On telephone audio Silero's
        score of the same sound swings with where its windows fall: a burp scored 0.12 one way and 0.76
        the way 10 ms later, and which way a call gets is chance (its frames' phase). The two looks cost
        two model runs at a decision (~0.15 ms of CPU per 32 ms window). `looks=1`: the first alone (what
        `bench/onset_replay.py --looks 1` compares with)."""
        n_windows = len(pcm8k) // WINDOW_8K
        if n_windows == 0:
            return np.zeros(0, dtype=np.float32)
        x = to_model_rate(pcm8k[: n_windows * WINDOW_8K])
        aligned = self._run(x, 0, n_windows)
        if n_windows < 2 or looks < 2:
            return aligned
        return mean_of_looks(aligned, self._run(x, WINDOW // 2, n_windows - 1))

    def _run(self, x: np.ndarray, start: int, n_windows: int) -> np.ndarray:
        """One sequence of `n_windows` windows of 16 kHz float audio from `start`, each with the 64 samples
        before it as its context; the model's recurrent state runs along the sequence from zero."""
        return self.run_from(x, start, n_windows, None)[0]

    def run_from(self, x: np.ndarray, start: int, n_windows: int,
                 state: "tuple[np.ndarray, np.ndarray] | None") -> "tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]":
        """`_run` from a recurrent state a previous run ended in (None: from zero); returns the scores and
        the state after the last window, for a run that goes on from there."""
        windows = x[start: start + n_windows * WINDOW].reshape(n_windows, WINDOW)
        context = np.zeros((n_windows, CONTEXT), dtype=np.float32)
        context[1:] = windows[:-1, -CONTEXT:]
        if start >= CONTEXT:
            context[0] = x[start - CONTEXT: start]
        batch = np.ascontiguousarray(np.concatenate((context, windows), axis=1), dtype=np.float32)
        if state is None:
            zero = np.zeros((1, 1, 128), dtype=np.float32)
            state = (zero, zero)
        out, h, c = self._session.run(None, {"input": batch, "h": state[0], "c": state[1]})
        return np.asarray(out, dtype=np.float32).reshape(-1), (h, c)


class SpeechDetector:
    """What the call core asks at a decision: is there speech in this audio, the agent's echo aside?"""

    def __init__(self, model: SpeechModel) -> None:
        self._model = model

    @property
    def model(self) -> SpeechModel:
        return self._model

    def analyze(self, audio: bytes, reference: bytes = b"", max_lag: int = 0) -> SpeechAnalysis:
        """`audio`: the caller's mu-law; `reference`: what played at the caller from `max_lag` samples
        before `audio` starts to its end (empty when the agent was not audible)."""
        pcm, erle, delay = self.without_echo(audio, reference, max_lag)
        return self.analysis(pcm, self._model.probabilities(pcm), erle, delay)

    @staticmethod
    def without_echo(audio: bytes, reference: bytes, max_lag: int) -> tuple[np.ndarray, float, float]:
        """The caller's audio as int16, the agent's echo taken out when a reference came; ERLE, delay."""
        pcm = mulaw.decode(audio)
        if reference and len(reference) == len(audio) + max_lag:
            estimate = cancel_echo(pcm, mulaw.decode(reference), max_lag)
            return estimate.residual, estimate.erle_db, estimate.delay_ms
        return pcm, 0.0, 0.0

    @staticmethod
    def analysis(pcm: np.ndarray, probs: np.ndarray, erle: float, delay: float) -> SpeechAnalysis:
        return SpeechAnalysis(tuple(round(float(p), 3) for p in probs), window_levels(pcm, len(probs)),
                              round(erle, 1), round(delay, 1))


class SpeechStream:
    """One call's model VAD, going on from where its last analysis stopped.

    The core asks about overlapping stretches of the same audio: an onset with the 300 ms before it, the
    same again 60 ms later, and, while a noise bed holds the energy VAD open, the last 0.9 s every 200 ms.
    Run cold each time, the model scored every second of a noisy line's audio about four times over
    (~4.6 ms of CPU per second analysed: 1.7 % of a core per call on a passing train). A request that
    starts where this call's chain of windows lies (`start`: its ring position, on the chain's 32 ms grid,
    not before the windows still kept, not after the chain's end) runs the model only over the audio
    past the chain's end, from the recurrent states the chain ended in (both looks), and its scores for
    the rest are the chain's; anything else starts a new chain, cold, as `SpeechDetector.analyze` does.
    A chain's state has heard more than a cold run's 300 ms of context, which is what the context is
    for. One request at a time runs on a chain; another that comes meanwhile runs cold."""

    # 8 kHz samples before the chain's end that are resampled again with the new audio: the resampler's
    # start-up lies in them, and the second look's next window starts half a window (128) before the end.
    _LEAD = WINDOW_8K
    _KEEP = 64  # windows of scores kept (~2 s): a re-check looks at most 0.9 s back

    def __init__(self, detector: SpeechDetector) -> None:
        self._detector = detector
        self._model = detector.model
        self._lock = threading.Lock()
        self.windows_run = 0  # aligned windows the model ran (its cost), for tests and benches
        self._new_chain(0)

    def _new_chain(self, origin: int) -> None:
        self._origin = origin  # ring position of the chain's window 0
        self._end = origin  # ring position where its last window ends
        self._first = 0  # index of the oldest window kept
        self._aligned: list[float] = []  # raw scores of windows self._first...
        self._half: list[float] = []  # the second look: window j spans windows j and j + 1
        self._states: "list[tuple[np.ndarray, np.ndarray] | None]" = [None, None]

    def analyze(self, audio: bytes, reference: bytes = b"", max_lag: int = 0, start: int = -1) -> SpeechAnalysis:
        if start < 0 or not self._lock.acquire(blocking=False):
            self.windows_run += len(audio) // WINDOW_8K
            return self._detector.analyze(audio, reference, max_lag)
        try:
            pcm, erle, delay = self._detector.without_echo(audio, reference, max_lag)
            return self._detector.analysis(pcm, self._scores(pcm, start), erle, delay)
        finally:
            self._lock.release()

    def _scores(self, pcm: np.ndarray, start: int) -> np.ndarray:
        n = len(pcm) // WINDOW_8K
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        offset = start - self._origin
        first = offset // WINDOW_8K
        lead = self._end - start
        if offset % WINDOW_8K or first < self._first or lead < 0 or (lead < self._LEAD and self._end > self._origin):
            self._new_chain(start)
            first, lead = 0, 0
        aligned_tail, half_tail = self._extend(pcm, start, start + n * WINDOW_8K, lead)
        k = first - self._first
        aligned = np.asarray((self._aligned + aligned_tail)[k:k + n], dtype=np.float32)
        if n > 1:
            aligned = mean_of_looks(aligned, np.asarray((self._half + half_tail)[k:k + n - 1], dtype=np.float32))
        drop = min(len(self._aligned) - self._KEEP, k)
        if drop > 0:
            del self._aligned[:drop]
            del self._half[:drop]
            self._first += drop
        return aligned

    def _extend(self, pcm: np.ndarray, start: int, end: int, lead: int) -> tuple[list[float], list[float]]:
        """Run both looks over [chain end, `end`) of the request's audio (which starts at `start`). The
        windows are kept but the last: its audio ends where the resampler's output does (its edge), so
        it is scored from the kept states and not kept; the next request scores it again, with the audio
        after it. Returns those last scores (aligned, second look)."""
        extra = (end - self._end) // WINDOW_8K
        if extra <= 0:
            return [], []
        pre = min(lead, self._LEAD)
        x = to_model_rate(pcm[self._end - pre - start: end - start])
        at = pre * 2  # the chain's end in x
        # The second look's windows so far end half a window before the chain's end, where the next one
        # starts; a new chain's first starts half a window in.
        half_at = WINDOW // 2 if self._end == self._origin else at - WINDOW // 2
        run, states = self._model.run_from, self._states
        keep = extra - 1
        if keep:
            scores, states[0] = run(x, at, keep, states[0])
            self._aligned.extend(scores.tolist())
        aligned_tail = run(x, at + keep * WINDOW, 1, states[0])[0].tolist()
        count = len(self._aligned) - 1 - len(self._half)
        if count > 0:
            scores, states[1] = run(x, half_at, count, states[1])
            self._half.extend(scores.tolist())
        half_tail = run(x, half_at + max(0, count) * WINDOW, 1, states[1])[0].tolist() if self._aligned else []
        self._end += keep * WINDOW_8K
        self.windows_run += extra
        return aligned_tail, half_tail


def window_levels(pcm: np.ndarray, n_windows: int) -> tuple[float, ...]:
    """Each 32 ms window's level in dBFS (the energy VAD's measure), so the core can ignore a window the
    model calls speech but that is too quiet to be the caller (an echo's faint remainder)."""
    if n_windows == 0:
        return ()
    frames = np.asarray(pcm[: n_windows * WINDOW_8K], dtype=np.float64).reshape(n_windows, WINDOW_8K)
    power = np.einsum("ij,ij->i", frames, frames) / WINDOW_8K
    return tuple(round(max(-100.0, 10.0 * float(np.log10(max(p, 1e-10) / 32768.0 ** 2))), 1) for p in power)
