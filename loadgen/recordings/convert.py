"""Turning source files into 8 kHz mu-law clips at a known level.

Decoding is sox's (it reads every format the packages use: WAV, FLAC, Ogg Vorbis, GSM); the
resampling to 8 kHz and the mu-law encoding are the gateway's own (`audio.resample`, `audio.mulaw`),
so a clip is exactly what the gateway would make of the same audio. OpenTTD's sound bank entries are
plain PCM WAV and go through the standard library's `wave`; pocketsphinx's .raw files are read as the
16-bit little-endian samples they are.

Every clip is set to a level fixed by its category, so a benchmark's parameters mean the same thing
whatever the source (see LEVELS). The recordings stay what they were: only their gain changes, and
a stretch cut out of a longer file gets a few ms of fade at the cut so the cut does not click.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import numpy.typing as npt

from audio import mulaw
from audio.resample import resample

from . import signals
from .catalogue import BabbleSource, Category, Clip, FileSource, SynthSource, TypingSource
from .debian import RecordingsError, cat_entries

__all__ = ["CONVERTER_VERSION", "LEVELS", "Level", "build_clip", "level_of"]

# Bumped when the conversion's output changes for the same input (a new fade, a new level rule), so
# cached clips made the old way are rebuilt.
CONVERTER_VERSION = 2

SAMPLE_RATE = signals.SAMPLE_RATE


@dataclass(frozen=True)
class Level:
    measure: str  # "active" (speech-like: P.56-style active level), "rms" (whole signal), "peak"
    dbfs: float


# ITU-T P.56 / G.191 set test speech to an active level of -26 dBov, the nominal talker level of a
# phone line; tones and music sit there too. Beds are 10 dB under it, so a bed used as it is makes a
# 10 dB SNR (mix_at_snr sets any other). Transients peak at -6 dBFS: a door slam or a laugh into a
# handset is loud, and 6 dB of headroom keeps the mu-law codec from clipping it.
SPEECH_ACTIVE_DBFS = -26.0
BED_RMS_DBFS = -36.0
TRANSIENT_PEAK_DBFS = -6.0
LEVELS: dict[Category, Level] = {
    Category.SPEECH: Level("active", SPEECH_ACTIVE_DBFS),
    Category.WORD: Level("active", SPEECH_ACTIVE_DBFS),
    Category.BACKCHANNEL: Level("active", SPEECH_ACTIVE_DBFS),
    Category.INTERRUPTION_WORD: Level("active", SPEECH_ACTIVE_DBFS),
    Category.TONE: Level("active", SPEECH_ACTIVE_DBFS),
    Category.MUSIC: Level("active", SPEECH_ACTIVE_DBFS),
    Category.NOISE_BED: Level("rms", BED_RMS_DBFS),
    Category.TRANSIENT: Level("peak", TRANSIENT_PEAK_DBFS),
}

CROP_FADE_MS = 5.0  # at a cut inside a recording: long enough not to click, short enough to keep an onset
TALKER_GAP_MS = 150.0  # between one talker's recordings in babble: a breath, not a pause
# Typing rhythm (seconds): a key is held this long, the next comes this long after, and now and then a
# longer pause (thinking, a word ends). About 5 keys a second: an ordinary typist.
KEY_HOLD_S = (0.07, 0.13)
KEY_INTERVAL_S = (0.11, 0.28)
TYPING_PAUSE_S = (0.25, 0.7)
TYPING_PAUSE_CHANCE = 0.12
_LEAD_S = 0.1  # a made bed starts and ends with this little of its own quiet, not with a keystroke
_SOX_TIMEOUT_S = 60.0  # one file's decode; the longest source (5 min of music) takes well under a second

Synthesizer = Callable[[str], tuple[npt.NDArray[np.int16], int]]


def _sox() -> str:
    path = shutil.which("sox")
    if path is None:
        raise RecordingsError("sox is not installed (apt-get install sox; scripts/test.sh installs it)")
    return path


def _decode_with_sox(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    sox = _sox()
    rate = subprocess.run([sox, "--i", "-r", str(path)], capture_output=True, text=True,
                          timeout=_SOX_TIMEOUT_S)
    if rate.returncode != 0:
        raise RecordingsError(f"sox cannot read {path}: {rate.stderr.strip()}")
    # -D: no dither. sox dithers by default when it reduces a decoded Vorbis/FLAC to 16 bits, with
    # random noise: two machines (or two runs) would then make different clips from the same file.
    pcm = subprocess.run([sox, "-V1", "-D", str(path), "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1",
                          "-L", "-"], capture_output=True, timeout=_SOX_TIMEOUT_S)
    if pcm.returncode != 0:
        raise RecordingsError(f"sox cannot decode {path}: {pcm.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(pcm.stdout, dtype="<i2").astype(np.int16), int(float(rate.stdout.strip()))


def _decode_wav_bytes(data: bytes, what: str) -> tuple[npt.NDArray[np.int16], int]:
    with wave.open(io.BytesIO(data)) as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    frames = frames[: len(frames) // (width * channels) * (width * channels)]  # a torn last frame is dropped
    if width == 2:
        x = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    elif width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    else:
        raise RecordingsError(f"{what}: {8 * width}-bit WAV is not handled")
    x = x.reshape(-1, channels).mean(axis=1)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16), rate


def _read(src: FileSource, root: Path) -> npt.NDArray[np.int16]:
    """The whole source file as 8 kHz int16 (before any cut)."""
    path = root / src.package / src.path
    if src.member is not None:
        entries = cat_entries(path.read_bytes())
        if src.member not in entries:
            raise RecordingsError(f"{src.path} has no sound titled {src.member!r}")
        pcm, rate = _decode_wav_bytes(entries[src.member], f"{src.path}:{src.member}")
    elif src.raw_rate is not None:
        pcm, rate = np.fromfile(path, dtype="<i2").astype(np.int16), src.raw_rate
    else:
        pcm, rate = _decode_with_sox(path)
    return resample(pcm, rate, SAMPLE_RATE)


def _cut(pcm: npt.NDArray[np.int16], start: float | None, end: float | None) -> npt.NDArray[np.int16]:
    if start is None and end is None:
        return pcm
    a = 0 if start is None else int(round(start * SAMPLE_RATE))
    b = pcm.size if end is None else min(pcm.size, int(round(end * SAMPLE_RATE)))
    if not 0 <= a < b:
        raise RecordingsError(f"cut {start}-{end} s is outside a {pcm.size / SAMPLE_RATE:.2f} s recording")
    return signals.fade(pcm[a:b], CROP_FADE_MS if a > 0 else 0.0, CROP_FADE_MS if b < pcm.size else 0.0)


def level_of(pcm: npt.NDArray[np.int16] | bytes, measure: str) -> float:
    if measure == "active":
        return signals.active_level_dbfs(pcm)
    if measure == "rms":
        return signals.rms_dbfs(pcm)
    if measure == "peak":
        return signals.peak_dbfs(pcm)
    raise ValueError(f"unknown level measure {measure!r}")


def _set_level(x: npt.NDArray[np.float64], level: Level, what: str) -> npt.NDArray[np.int16]:
    """`x` (float samples on the int16 scale, possibly beyond it) scaled to `level`, as int16."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        raise RecordingsError(f"{what} is silent")
    # Measure on a copy brought under full scale first: scaling is exact, clipping would not be.
    probe = np.rint(x * (16384.0 / peak)).astype(np.int16)
    gain_db = level.dbfs - level_of(probe, level.measure) + 20.0 * math.log10(16384.0 / peak)
    y = x * 10.0 ** (gain_db / 20.0)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _babble(src: BabbleSource, root: Path) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(src.seed)
    total = np.zeros(int(round(src.seconds * SAMPLE_RATE)))
    for talker in src.talkers:
        track = signals.concat_with_pauses([_read(f, root) for f in talker], TALKER_GAP_MS)
        # Every talker at the same active level: nobody dominates the room.
        track = signals.scale_db(track, SPEECH_ACTIVE_DBFS - signals.active_level_dbfs(track))
        offset = float(rng.uniform(0.0, track.size / SAMPLE_RATE))
        total += signals.loop_to(track, src.seconds, offset_s=offset).astype(np.float64)
    return total


def _typing(src: TypingSource, root: Path) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(src.seed)
    sounds: dict[str, npt.NDArray[np.float64]] = {}

    def sound(f: FileSource) -> npt.NDArray[np.float64]:
        if f.path not in sounds:
            sounds[f.path] = _read(f, root).astype(np.float64)
        return sounds[f.path]

    total = np.zeros(int(round(src.seconds * SAMPLE_RATE)))

    def place(x: npt.NDArray[np.float64], at_s: float) -> None:
        start = int(round(at_s * SAMPLE_RATE))
        n = min(x.size, total.size - start)
        if n > 0:
            total[start:start + n] += x[:n]

    t = _LEAD_S
    while t < src.seconds - _LEAD_S:
        press, release = src.keys[int(rng.integers(len(src.keys)))]
        place(sound(press), t)
        place(sound(release), t + float(rng.uniform(*KEY_HOLD_S)))
        t += float(rng.uniform(*KEY_INTERVAL_S))
        if rng.random() < TYPING_PAUSE_CHANCE:
            t += float(rng.uniform(*TYPING_PAUSE_S))
    return total


def build_clip(clip: Clip, root: Path, synthesize: Synthesizer | None) -> bytes:
    """The clip as 8 kHz mu-law at its category's level.

    `root` holds each package's extracted files under `<package>/<path>`; `synthesize` turns text into
    (int16 samples, rate) for the synthesized clips.
    """
    src = clip.source
    if isinstance(src, FileSource):
        x = _cut(_read(src, root), src.start, src.end).astype(np.float64)
    elif isinstance(src, BabbleSource):
        x = _babble(src, root)
    elif isinstance(src, TypingSource):
        x = _typing(src, root)
    elif isinstance(src, SynthSource):
        if synthesize is None:
            raise RecordingsError(f"{clip.name} is synthesized and no synthesizer was given")
        pcm, rate = synthesize(src.text)
        x = resample(pcm, rate, SAMPLE_RATE).astype(np.float64)
    else:
        raise TypeError(f"unknown source {src!r}")
    return mulaw.encode(_set_level(x, LEVELS[clip.category], clip.name))
