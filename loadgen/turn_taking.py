"""The realistic turn-taking benchmark (issue 20, item 1): real recordings played into real-time calls.

Every probe is one simulated Twilio call (`loadgen.simcaller.run_call`) against a running gateway, made
of recordings from `loadgen.recordings` (human speech with its transcript, noise beds, transients,
tones, music on hold; backchannels no package has are synthesized there). Scenarios:

- `nonspeech`: a transient (door, thud, burp, laugh...), a slice of a noise bed or of music raised to a
  voice's level, or a tone, 350-600 ms, played during the greeting. A `clear` is a false barge-in; the
  reply is lost if the stored greeting is `interrupted`, its `heard_text` is not its `agent_text`, or
  no audio came after the `clear`.
- `backchannel`: "uh huh", "yeah", "right"... during the greeting. The reply stops if it is lost as above
  (a `clear` that resumes is counted apart); the backchannel is answered if a stored turn holds it and an
  agent reply.
- `barge_in`: real speech (sentences, and "no", "wait", "hold on", "sorry") during the greeting. Detected:
  a `clear` after the speech's onset; time to `clear` from the onset (the clip's first active frame, as
  sent); stopped: the stored greeting is `interrupted`; answered: a stored turn after it has words of it
  and a reply.
- `pause`: one utterance with a silence of 400, 700 or 1,000 ms inside (two halves of a real sentence cut
  where it already paused, or real words joined: "Tuesday at | three P.M."). Premature: reply audio
  reached the caller before the second half ended; split: the stored transcript answers it as more than
  one turn. End-of-turn latency: the second half's end -> the reply's first audio at the caller.
- `noise_only`: a noise bed (babble, traffic, train, machine, typing, music on hold, hiss) on the line
  for the whole call, greeting included, nobody speaking. Phantom turns: stored caller turns; also the
  greeting cut (a `clear`).
- `snr`: a noise bed on the whole call and one real sentence at 20, 10 or 5 dB SNR (the sentence's active
  level over the bed's RMS). Detected: the turn got a reply and a stored caller turn; WER of what was
  stored against the transcript.
- `echo`: the caller's phone feeds what its speaker plays back into its microphone at -10 or -20 dB,
  60-150 ms late; the caller speaks two sentences after the replies. Self-interruption: a `clear` while
  the caller was not talking (per agent reply); a stored caller turn that is none of the caller's
  sentences is the agent answering itself.
- `clean`: two real sentences per call after the replies: WER and end-of-turn latency.

The verdicts (`loadgen.turn_taking_verdicts`) come only from the wire as the caller saw it (`clear`,
media, marks) and the stored transcript (`GET /api/calls/{call_sid}`: user_text, agent_text, heard_text,
interrupted; `backchannel` where the gateway stores it), so any version of the gateway can be measured.
Events and speech are timed by their content: a clip's onset and end are its first and last active 20 ms
frames (`active_span`), placed on the send clock of the frames that carried them.

This module builds the probes (`build_probes`) and runs them against a gateway (`spawn_gateway`,
`run_probes`); `bench/turn_taking.py` is the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from loadgen.bench import free_port, stop_process, wait_http
from loadgen.recordings import (Catalogue, active_level_dbfs, active_span, concat_with_pauses, fade, rms_dbfs,
                                scale_db, to_pcm)
from loadgen.simcaller import CallerTurn, LineConditions, run_call
from loadgen.turn_taking_verdicts import SCENARIOS, analyse

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
FRAME_S = 0.02

PAUSES_MS = (400, 700, 1000)
SNRS_DB = (20, 10, 5)
ECHO_GAINS_DB = (-10, -20)
ECHO_DELAYS_MS = (60, 90, 120, 150)

# A noise slice during the reply is raised to a caller's voice (the catalogue's speech level): a burst as
# loud as speech is the case that matters; a quieter one is easier.
BURST_LEVEL_DBFS = -26.0
EVENT_MS = (350, 450, 500, 600)  # the 350-600 ms
# Where in the greeting ("Hi, thanks for calling the clinic. Would you like to book an appointment?",
# ~4.3 s) an event's onset lands, ms after its first audio played: mostly its first sentence, so an
# acknowledgement is not an answer to its question.
EVENT_AT_MS = (500, 800, 1100, 1400)
BARGE_AT_MS = (600, 900, 1200, 1500)
# After the greeting (or a reply) finished, the caller stays on the line this long, so an answer to a
# backchannel or to a noise comes in before the call ends.
TRAILING_S = 3.0
NOISE_ONLY_S = 30.0

NONSPEECH_TRANSIENTS = ("door", "thud", "burp", "laugh", "crowd_oooh", "cash_till", "clatter", "metal_drop",
                        "crash", "car_horn", "ring_burst", "crow_caw")
NONSPEECH_BEDS = ("babble_6", "crowd_applause", "traffic_truck", "traffic_bus", "train_passby", "machine_elevator",
                  "jackhammer", "sawmill", "helicopter", "moh_cold_day", "moh_system", "keyboard_typing")
NONSPEECH_TONES = ("ring_incoming", "busy_tone", "calling_tone", "ringback_twinkle", "ringtone_twinkle", "beep_error")
BACKCHANNELS = ("right_allison", "uh_huh_piper", "mm_hmm_piper", "yeah_piper", "okay_piper", "right_piper",
                "sure_piper")
BARGE_SPEECH = ("allison_please_hold", "allison_cannot_complete", "allison_check_number", "allison_circuits_busy",
                "allison_having_problems", "allison_weasels", "librivox_0880", "librivox_0930", "cards_002",
                "sphinx_go_forward")
BARGE_WORDS = ("no_allison", "wait_allison", "hold_on_piper", "sorry_allison")
PAUSE_WORDS = ((("word_tuesday", "word_at"), ("word_three", "word_pm")),
               (("word_monday", "word_at"), ("word_ten", "word_am")),
               (("word_friday", "word_at"), ("word_two", "word_pm")))
PAUSE_SENTENCES = ("allison_locate_person", "allison_no_matches", "allison_connect_party", "allison_mailbox_full",
                   "librivox_0870", "librivox_0890", "librivox_0920", "cards_005")
NOISE_ONLY_BEDS = ("babble_6", "crowd_applause", "traffic_truck", "train_passby", "machine_elevator",
                   "keyboard_typing", "moh_cold_day", "line_hiss")
SNR_BEDS = ("babble_6", "traffic_truck", "machine_elevator", "moh_cold_day", "crowd_applause", "train_passby")
SNR_SPEECH = ("allison_please_hold", "allison_did_not_understand", "allison_number_not_valid",
              "allison_waiting_representative", "librivox_0880", "librivox_0930")
ECHO_SPEECH = ("allison_please_wait", "allison_something_wrong", "allison_check_number", "librivox_0880",
               "cards_003", "sphinx_go_somewhere", "allison_circuits_busy", "tidigits_2934z")
# Clean speech: the real sentences under 10 s (the two long asterisk prompts would be one 25 s turn each).
CLEAN_MAX_S = 10.0


# ------------------------------------------------------------------ clips


def trim(audio: bytes, pad_ms: float = 0.0) -> bytes:
    """The clip's active part, with `pad_ms` of its own audio kept either side."""
    start, end = active_span(audio)
    pad = pad_ms / 1000.0
    a, b = max(0, int((start - pad) * RATE)), min(len(audio), int((end + pad) * RATE))
    return audio[a:b]


def event_slice(audio: bytes, ms: int, offset_s: float = 0.0, level_dbfs: float | None = None) -> bytes:
    """`ms` of `audio` from `offset_s` into its active part, with 5 ms fades; at `level_dbfs` RMS if given."""
    start, end = active_span(audio)
    a = int((start + offset_s) * RATE)
    n = ms * RATE // 1000
    if a + n > len(audio):
        a = max(0, len(audio) - n)
    piece = fade(audio[a:a + n], 5, 5)
    if level_dbfs is not None:
        piece = scale_db(piece, level_dbfs - rms_dbfs(piece))
    return piece


def inner_gaps(audio: bytes, min_ms: int = 60) -> list[tuple[float, float]]:
    """(start, end) s of the quiet stretches inside a clip's active part: where a talker already paused."""
    pcm = to_pcm(audio).astype(np.float64)
    n = int(FRAME_S * RATE)
    frames = pcm[: pcm.size // n * n].reshape(-1, n)
    power = np.mean(frames * frames, axis=1)
    if not np.any(power > 0):
        return []
    loud = float(np.percentile(power, 95))
    quiet = power < loud * 10 ** (-25 / 10)
    s, e = active_span(audio)
    first, last = int(s / FRAME_S), int(e / FRAME_S)
    gaps, k = [], first
    while k < last:
        if quiet[k]:
            j = k
            while j < last and quiet[j]:
                j += 1
            if (j - k) * FRAME_S * 1000 >= min_ms:
                gaps.append((k * FRAME_S, j * FRAME_S))
            k = j
        else:
            k += 1
    return gaps


def split_at_pause(audio: bytes) -> tuple[bytes, bytes] | None:
    """A real sentence cut in two where the talker already paused (None if it never does between a quarter
    and four fifths of the way): the longest such pause, the one nearest the middle of equals. Each half
    keeps 30 ms of the pause, so no word loses its quiet edge, and its outer edge is trimmed to 40 ms."""
    s, e = active_span(audio)
    gaps = [g for g in inner_gaps(audio) if s + 0.25 * (e - s) <= g[0] and g[1] <= s + 0.8 * (e - s)]
    if not gaps:
        return None
    mid = (s + e) / 2
    g0, g1 = min(gaps, key=lambda g: (-round(g[1] - g[0], 3), abs((g[0] + g[1]) / 2 - mid)))
    keep = int(0.03 * RATE)
    first = audio[max(0, int((s - 0.04) * RATE)): int(g0 * RATE) + keep]
    second = audio[int(g1 * RATE) - keep: int((e + 0.04) * RATE)]
    return first, second


# ------------------------------------------------------------------ probes


@dataclass
class Part:
    """What one caller turn holds: its words (None: not speech) and where its active audio lies in it."""

    kind: str  # event | backchannel | speech | pause_a_b | silence
    clip: str = ""
    transcript: str | None = None
    onset_s: float = 0.0  # first active frame, s into the turn's audio
    end_s: float = 0.0  # end of the last active frame
    a_end_s: float | None = None  # pause probes: the end of the first half
    b_start_s: float | None = None  # ... and the start of the second


@dataclass
class Probe:
    scenario: str
    label: str
    group: str  # what the summary groups by: a category, a pause length, an SNR, an echo gain
    turns: list[CallerTurn]
    parts: list[Part]
    line: LineConditions | None = None
    max_call_s: float = 60.0
    max_reply_wait_s: float = 8.0
    noise_s: float = 0.0  # noise-only seconds on the line (noise_only probes)


def _part(kind: str, clip: str, audio: bytes, transcript: str | None = None) -> Part:
    s, e = active_span(audio)
    return Part(kind, clip, transcript, round(s, 3), round(e, 3))


def _pad(audio: bytes, lead_ms: float = 200, tail_ms: float = 200) -> bytes:
    return concat_with_pauses([audio], lead_ms=lead_ms, tail_ms=tail_ms)


def _during_greeting(scenario: str, label: str, group: str, audio: bytes, part: Part, at_ms: int) -> Probe:
    """The clip's onset `at_ms` after the greeting's first audio played; then silence until the greeting
    (or what answers the clip) has played, and TRAILING_S more."""
    turns = [CallerTurn(audio=audio, barge_in_ms=max(0, at_ms - int(part.onset_s * 1000))),
             CallerTurn(wait_ms=int(TRAILING_S * 1000), gap_ms=0)]
    return Probe(scenario, label, group, turns, [part, Part("silence")], max_call_s=45.0, max_reply_wait_s=8.0)


def nonspeech_probes(cat: Catalogue, n: int) -> list[Probe]:
    transients = [("transient", name, fade(trim(cat.audio(name))[: 600 * RATE // 1000], 0, 5))
                  for name in NONSPEECH_TRANSIENTS]
    bursts = [("noise_burst", name, event_slice(cat.audio(name), EVENT_MS[k % len(EVENT_MS)], (0.3 * k) % 1.0,
                                                 BURST_LEVEL_DBFS))
              for k, name in enumerate(NONSPEECH_BEDS)]
    tones = [("tone", name, event_slice(cat.audio(name), EVENT_MS[(k + 1) % len(EVENT_MS)]))
             for k, name in enumerate(NONSPEECH_TONES)]
    probes = []
    for k, (group, name, audio) in enumerate(_spread([transients, bursts, tones], n)):
        audio = _pad(audio, 100, 100)
        at = EVENT_AT_MS[k % len(EVENT_AT_MS)]
        probes.append(_during_greeting("nonspeech", f"{name} {len(audio) * 1000 // RATE - 200}ms @{at}ms", group,
                                       audio, _part("event", name, audio), at))
    return probes


def backchannel_probes(cat: Catalogue, n: int) -> list[Probe]:
    probes = []
    names = [name for name in BACKCHANNELS if name in cat]
    for k in range(n):
        name = names[k % len(names)]
        audio = _pad(trim(cat.audio(name)), 100, 100)
        at = EVENT_AT_MS[(k + k // len(names)) % len(EVENT_AT_MS)]
        probes.append(_during_greeting("backchannel", f"{name} @{at}ms", "synthesized" if "piper" in name else "real",
                                       audio, _part("backchannel", name, audio, cat.transcript(name)), at))
    return probes


def barge_in_probes(cat: Catalogue, n: int) -> list[Probe]:
    # Words are a quarter of them: "no", "wait", "hold on", "sorry" alone must stop the agent too.
    sentences = [("sentence", name) for name in BARGE_SPEECH]
    spoken_words = [("word", name) for name in BARGE_WORDS]
    probes = []
    for k, (group, name) in enumerate(_spread([sentences, sentences, sentences, spoken_words], n)):
        audio = _pad(trim(cat.audio(name)), 100, 100)
        at = BARGE_AT_MS[k % len(BARGE_AT_MS)]
        probes.append(_during_greeting("barge_in", f"{name} @{at}ms", group, audio,
                                       _part("speech", name, audio, cat.transcript(name)), at))
    return probes


def pause_items(cat: Catalogue) -> list[tuple[str, bytes, bytes, str]]:
    """(label, first half, second half, transcript of the whole)."""
    items = []
    for a_names, b_names in PAUSE_WORDS:
        a = concat_with_pauses([trim(cat.audio(x), 20) for x in a_names], 60)
        b = concat_with_pauses([trim(cat.audio(x), 20) for x in b_names], 60)
        text = " ".join(cat.transcript(x) for x in a_names + b_names)
        items.append((" ".join(x.removeprefix("word_") for x in a_names) + " | "
                      + " ".join(x.removeprefix("word_") for x in b_names), a, b, text))
    for name in PAUSE_SENTENCES:
        halves = split_at_pause(cat.audio(name))
        if halves is not None:
            items.append((name, halves[0], halves[1], cat.transcript(name)))
    return items


def pause_probes(cat: Catalogue, n_per_pause: int) -> list[Probe]:
    items = pause_items(cat)
    probes = []
    for pause in PAUSES_MS:
        for k in range(n_per_pause):
            label, a, b, text = items[(k + pause // 100) % len(items)]
            audio = concat_with_pauses([a, b], pause, lead_ms=200, tail_ms=300)
            a_start, a_end = active_span(a)
            b_start, b_end = active_span(b)
            off_a, off_b = 0.2, 0.2 + len(a) / RATE + pause / 1000
            part = Part("pause_a_b", label, text, round(off_a + a_start, 3), round(off_b + b_end, 3),
                        a_end_s=round(off_a + a_end, 3), b_start_s=round(off_b + b_start, 3))
            probes.append(Probe("pause", f"{label} ({pause} ms)", str(pause), [CallerTurn(audio=audio),
                                CallerTurn(wait_ms=int(TRAILING_S * 1000), gap_ms=0)], [part, Part("silence")],
                                max_call_s=45.0, max_reply_wait_s=10.0))
    return probes


def noise_only_probes(cat: Catalogue, n: int, seconds: float = NOISE_ONLY_S) -> list[Probe]:
    probes = []
    for k in range(n):
        bed = NOISE_ONLY_BEDS[k % len(NOISE_ONLY_BEDS)]
        line = LineConditions(noise=cat.audio(bed), noise_offset_s=0.7 * k)  # the catalogue's level: -36 dBFS
        turns = [CallerTurn(at_ms=int(seconds * 1000))]
        probes.append(Probe("noise_only", f"{bed} {seconds:g}s", bed, turns, [Part("silence")], line=line,
                            max_call_s=seconds + 20.0, noise_s=seconds))
    return probes


def snr_probes(cat: Catalogue, n_per_snr: int) -> list[Probe]:
    probes = []
    for snr in SNRS_DB:
        for k in range(n_per_snr):
            name = SNR_SPEECH[k % len(SNR_SPEECH)]
            bed = SNR_BEDS[(k + snr) % len(SNR_BEDS)]
            speech = _pad(trim(cat.audio(name)), 200, 300)
            noise = cat.audio(bed)
            # The bed's RMS set `snr` dB under the sentence's active level.
            gain = active_level_dbfs(speech) - snr - rms_dbfs(noise)
            line = LineConditions(noise=noise, noise_gain_db=gain, noise_offset_s=0.5 * k)
            turns = [CallerTurn(audio=speech), CallerTurn(wait_ms=int(TRAILING_S * 1000), gap_ms=0)]
            probes.append(Probe("snr", f"{name} over {bed} at {snr} dB", str(snr), turns,
                                [_part("speech", name, speech, cat.transcript(name)), Part("silence")], line=line,
                                max_call_s=50.0, max_reply_wait_s=10.0))
    return probes


def echo_probes(cat: Catalogue, n_per_gain: int) -> list[Probe]:
    probes = []
    for gain in ECHO_GAINS_DB:
        for k in range(n_per_gain):
            delay = ECHO_DELAYS_MS[k % len(ECHO_DELAYS_MS)]
            names = [ECHO_SPEECH[(2 * k + j) % len(ECHO_SPEECH)] for j in range(2)]
            audios = [_pad(trim(cat.audio(x)), 200, 300) for x in names]
            turns = [CallerTurn(audio=a) for a in audios] + [CallerTurn(wait_ms=int(TRAILING_S * 1000), gap_ms=0)]
            parts = [_part("speech", x, a, cat.transcript(x)) for x, a in zip(names, audios)] + [Part("silence")]
            probes.append(Probe("echo", f"{gain} dB, {delay} ms: " + ", ".join(names), str(gain), turns, parts,
                                line=LineConditions(echo_gain_db=gain, echo_delay_ms=delay),
                                max_call_s=60.0, max_reply_wait_s=10.0))
    return probes


def clean_probes(cat: Catalogue, n: int) -> list[Probe]:
    names = [c.name for c in cat.clips("speech") if c.duration_s <= CLEAN_MAX_S]
    probes = []
    for k in range(n):
        pick = [names[(2 * k + j) % len(names)] for j in range(2)]
        audios = [_pad(trim(cat.audio(x)), 200, 300) for x in pick]
        turns = [CallerTurn(audio=a) for a in audios] + [CallerTurn(wait_ms=1000, gap_ms=0)]
        parts = [_part("speech", x, a, cat.transcript(x)) for x, a in zip(pick, audios)] + [Part("silence")]
        probes.append(Probe("clean", ", ".join(pick), "clean", turns, parts, max_call_s=60.0, max_reply_wait_s=10.0))
    return probes


def _spread(groups: list[list], n: int) -> list:
    """`n` items taken from the groups in turn, each group cycling through its own items: a small run still
    samples every kind, and a large one every item. A group listed twice gets twice the turns."""
    groups = [g for g in groups if g]
    if not groups:
        return []
    taken: dict[int, int] = {}
    out = []
    for k in range(n):
        g = groups[k % len(groups)]
        i = taken.get(id(g), 0)
        taken[id(g)] = i + 1
        out.append(g[i % len(g)])
    return out


@dataclass(frozen=True)
class Sizes:
    """How many probes of each scenario. `quick()` is a smoke run of every scenario."""

    nonspeech: int = 24
    backchannel: int = 14
    barge_in: int = 14
    pause_per_length: int = 6
    noise_only: int = 8
    noise_only_s: float = NOISE_ONLY_S
    snr_per_level: int = 6
    echo_per_gain: int = 4
    clean: int = 14

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(nonspeech=3, backchannel=2, barge_in=2, pause_per_length=1, noise_only=1, noise_only_s=15.0,
                   snr_per_level=1, echo_per_gain=1, clean=1)


def build_probes(cat: Catalogue, sizes: Sizes = Sizes(), scenarios: Sequence[str] = SCENARIOS,
                 seed: int = 20) -> list[Probe]:
    """Every probe of the run, shuffled (seeded) so each scenario meets the same mix of other calls."""
    builders = {
        "nonspeech": lambda: nonspeech_probes(cat, sizes.nonspeech),
        "backchannel": lambda: backchannel_probes(cat, sizes.backchannel),
        "barge_in": lambda: barge_in_probes(cat, sizes.barge_in),
        "pause": lambda: pause_probes(cat, sizes.pause_per_length),
        "noise_only": lambda: noise_only_probes(cat, sizes.noise_only, sizes.noise_only_s),
        "snr": lambda: snr_probes(cat, sizes.snr_per_level),
        "echo": lambda: echo_probes(cat, sizes.echo_per_gain),
        "clean": lambda: clean_probes(cat, sizes.clean),
    }
    unknown = set(scenarios) - set(builders)
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    probes = [p for name in SCENARIOS if name in scenarios for p in builders[name]()]
    random.Random(seed).shuffle(probes)
    return probes


# ------------------------------------------------------------------ running it


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:port
    media_url: str
    pid: int | None = None
    log: Path | None = None

    def stored_call(self, call_sid: str, timeout: float = 10.0) -> dict:
        """The stored call once its end is recorded (the store is written just after the socket closes)."""
        deadline = time.monotonic() + timeout
        call: dict = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/calls/{call_sid}", timeout=5) as resp:
                    call = json.loads(resp.read())
                if call.get("end_reason"):
                    return call
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        return call


def code_version(src: Path) -> dict[str, Any]:
    """The commit a tree is at, and whether it has changes of its own (shared trees usually do)."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    product = ("gateway", "dialog", "providers", "audio")
    return {"src": str(src), "commit": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s")[:100],
            # The last commit that changed the product (the call core, the dialog, the engines, the audio):
            # what a before/after compares, whatever tool commits came after it.
            "product_commit": git("log", "-1", "--format=%h", "--", *product),
            "product_subject": git("log", "-1", "--format=%s", "--", *product)[:100],
            "changed_files": len(changed),
            "changed_product_files": sorted(f for f in changed
                                            if f.split("/")[0] in product)}


@contextlib.contextmanager
def spawn_gateway(src: Path | None = None, env: dict[str, str] | None = None,
                  ready_timeout_s: float = 180.0) -> Iterator[Gateway]:
    """`python -m gateway serve` from `src` (default: this checkout) on a free port, on the offline default
    (no cloud keys), with its own database; stopped on exit. The venv's packages serve any tree."""
    src = Path(src or ROOT).resolve()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-turn-taking-"))
    full_env = {k: v for k, v in os.environ.items()
                if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("TWILIO_")}
    full_env.update({"PORT": str(port), "HOST": "127.0.0.1", "PUBLIC_URL": f"http://127.0.0.1:{port}",
                     "VOICEGATE_DB": str(tmp / "voicegate.db"), "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                     "PYTHONPATH": str(src)})
    full_env.update(env or {})
    log = tmp / "gateway.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=src, env=full_env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, ready_timeout_s, log)
        yield Gateway(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media", proc.pid, log)
    finally:
        stop_process(proc)


async def run_probe(gateway: Gateway, probe: Probe) -> dict[str, Any]:
    report = await run_call(gateway.media_url, probe.turns, max_call_s=probe.max_call_s,
                            max_reply_wait_s=probe.max_reply_wait_s, line=probe.line)
    call = await asyncio.to_thread(gateway.stored_call, report.call_sid)
    result = analyse(probe, report, call)
    result["duration_s"] = round(report.duration_s, 2)
    return result


async def run_probes(gateway: Gateway, probes: Sequence[Probe], concurrency: int = 3,
                     progress=None) -> list[dict[str, Any]]:
    """Every probe, `concurrency` calls at a time, in order of the list; results in the same order."""
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(probe: Probe) -> dict[str, Any]:
        nonlocal done
        async with gate:
            result = await run_probe(gateway, probe)
        done += 1
        if progress is not None:
            progress(done, len(probes), result)
        return result

    return list(await asyncio.gather(*(one(p) for p in probes)))


async def warm_up(gateway: Gateway, cat: Catalogue) -> None:
    """One unmeasured call: the first transcription and the first model verdicts load lazily."""
    speech = _pad(trim(cat.audio("allison_please_hold")), 200, 300)
    await run_call(gateway.media_url, [CallerTurn(audio=speech)], max_call_s=40.0, max_reply_wait_s=10.0)


def probe_plan(probes: Sequence[Probe]) -> dict[str, int]:
    plan: dict[str, int] = {}
    for p in probes:
        plan[p.scenario] = plan.get(p.scenario, 0) + 1
    return plan


__all__ = ["PAUSES_MS", "SCENARIOS", "Gateway", "Part", "Probe", "Sizes", "build_probes", "run_probes",
           "spawn_gateway", "split_at_pause"]
