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
        x = int16_to_float32(resample(np.asarray(pcm8k[: n_windows * WINDOW_8K], dtype=np.int16), 8000, MODEL_RATE))
        x = np.pad(x[: n_windows * WINDOW], (0, max(0, n_windows * WINDOW - len(x))))
        aligned = self._run(x, 0, n_windows)
        if n_windows < 2 or looks < 2:
            return aligned
        half = self._run(x, WINDOW // 2, n_windows - 1)  # shifted window k spans aligned windows k and k + 1
        around = np.empty(n_windows, dtype=np.float32)
        around[0], around[-1] = half[0], half[-1]
        around[1:-1] = (half[:-1] + half[1:]) / 2
        return (aligned + around) / 2

    def _run(self, x: np.ndarray, start: int, n_windows: int) -> np.ndarray:
        """One sequence of `n_windows` windows of 16 kHz float audio from `start`, each with the 64 samples
        before it as its context; the model's recurrent state runs along the sequence from zero."""
        windows = x[start: start + n_windows * WINDOW].reshape(n_windows, WINDOW)
        context = np.zeros((n_windows, CONTEXT), dtype=np.float32)
        context[1:] = windows[:-1, -CONTEXT:]
        if start >= CONTEXT:
            context[0] = x[start - CONTEXT: start]
        batch = np.ascontiguousarray(np.concatenate((context, windows), axis=1), dtype=np.float32)
        state = np.zeros((1, 1, 128), dtype=np.float32)
        out, _h, _c = self._session.run(None, {"input": batch, "h": state, "c": state})
        return np.asarray(out, dtype=np.float32).reshape(-1)


class SpeechDetector:
    """What the call core asks at a decision: is there speech in this audio, the agent's echo aside?"""

    def __init__(self, model: SpeechModel) -> None:
        self._model = model

    def analyze(self, audio: bytes, reference: bytes = b"", max_lag: int = 0) -> SpeechAnalysis:
        """`audio`: the caller's mu-law; `reference`: what played at the caller from `max_lag` samples
        before `audio` starts to its end (empty when the agent was not audible)."""
        pcm = mulaw.decode(audio)
        erle = delay = 0.0
        if reference and len(reference) == len(audio) + max_lag:
            estimate = cancel_echo(pcm, mulaw.decode(reference), max_lag)
            pcm, erle, delay = estimate.residual, estimate.erle_db, estimate.delay_ms
        probs = self._model.probabilities(pcm)
        return SpeechAnalysis(tuple(round(float(p), 3) for p in probs), window_levels(pcm, len(probs)),
                              round(erle, 1), round(delay, 1))


def window_levels(pcm: np.ndarray, n_windows: int) -> tuple[float, ...]:
    """Each 32 ms window's level in dBFS (the energy VAD's measure), so the core can ignore a window the
    model calls speech but that is too quiet to be the caller (an echo's faint remainder)."""
    if n_windows == 0:
        return ()
    frames = np.asarray(pcm[: n_windows * WINDOW_8K], dtype=np.float64).reshape(n_windows, WINDOW_8K)
    power = np.einsum("ij,ij->i", frames, frames) / WINDOW_8K
    return tuple(round(max(-100.0, 10.0 * float(np.log10(max(p, 1e-10) / 32768.0 ** 2))), 1) for p in power)
