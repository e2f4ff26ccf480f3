"""`voicegate bench`: many concurrent simulated Twilio calls against one gateway, and what they cost.

    voicegate bench --spawn -c 25                    # emulators + gateway started here, torn down after
    voicegate bench --spawn -c 100 --gateway-cpu 0 --loadgen-cpu 1 --json out.json
    voicegate bench --url ws://127.0.0.1:8000/twilio/media --gateway-pid 1234 -c 10

Each call is a real-time `loadgen.simcaller` call (20 ms frames, marks echoed, a simulated
speaker): it waits for the greeting, then speaks `--turns` utterances of `--conversation` (a booking
the rules understand, or an off-script one: loadgen/conversations.py), the one at `--barge-in-turn`
500 ms into the agent's previous reply (a barge-in). Calls start `--ramp-s` apart in total (never
all in one millisecond), at phases spread over the 20 ms frame clock as independent callers' are;
each is cut at `--max-call-s`; no call starts after `--duration` and the whole run ends by
`--duration + --max-call-s`.

What it reports (the definitions matter more than the numbers):

- voice-to-voice: caller speech end (last voiced frame sent) -> reply audio starts playing at the
  caller, p50/p95/p99 over every answered turn. The greeting is reported apart. Also per kind of
  caller line (script / answer / tool, from the conversation) and, when the gateway's store is at
  hand (`--spawn`, or `--gateway-db`), per kind of reply: what the gateway's first audio waited for
  (quick response, cache, one LLM request, LLM + tool), as it recorded each turn.
- caller-side overhead: voice-to-voice minus the end-of-speech wait (the Deepgram endpointing the
  gateway asked the emulator for, audio time after the last voiced frame) minus the providers'
  configured share (STT final delay + LLM first token + the token stream up to the first phrase the
  gateway's chunker would speak + TTS first byte). Only computed when the emulators' settings are
  known (`--spawn`, or `--emulators-url`), and for the booking conversation, whose every turn has
  that one share.
- gateway overhead: the gateway's own `voicegate_gateway_overhead_seconds` histogram, scraped
  before and after; p50/p99 are interpolated inside the buckets of the difference.
- barge-in: caller speech onset -> `clear` received, p50/p95 over the barge-in turns.
- underruns: the speaker ran dry inside a reply (simcaller's rule); count, % of reply frames
  played, and the gaps' total as % of reply time played.
- gateway CPU (% of one core, mean while every call was up, and over the whole load) and RSS
  (idle after a warm-up call, peak under load, per call = (peak - idle) / concurrency).
- the load generator's own CPU, its event-loop lag and the calls' send-clock slip. If it was the
  bottleneck (a generator process or the generator's core near 100 %, the loop late, the 20 ms
  clock slipping), the verdict says so: then the figures measure the generator, not the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from loadgen import conversations
from loadgen.stats import percentile, summarize
from loadgen.simcaller import FRAME_BYTES, FRAME_S, CallerTurn, CallReport, run_call

ROOT = Path(__file__).resolve().parent.parent

# The caller's script (`--conversation`, loadgen/conversations.py). The texts are spoken by the local
# Piper voice (so the offline gateway's whisper and Pipecat's Silero VAD hear real speech) and are the
# Deepgram emulator's transcripts in the same order, so the cloud path's dialog sees what was "said".
# The default: booking phrases the rules know.
UTTERANCES = conversations.lines("booking")
# The emulated LLM's reply: two sentences, so sentence-by-sentence TTS runs, and long enough
# (~5 s at the ElevenLabs emulator's 65 ms/char) that a barge-in 500 ms in lands inside it.
LLM_REPLY = "Sure, I can help you with that. Which day and time would suit you best?"
# By default every LLM answer is different (numbered from this template), as real LLM prose is: the
# same text every time would be served from the gateway's rendered-audio cache with no TTS wait,
# and the benchmark would measure a cache. The number leads, so the first phrase differs too.
LLM_REPLY_TEMPLATE = "Booking {n}: sure, I can help you with that. Which day and time would suit you best for booking {n}?"

# Emulated provider latencies of `--spawn` (seconds), the fixed figures.
DEFAULT_STT_FINAL_DELAY = 0.15
DEFAULT_LLM_FIRST_TOKEN = 0.30
DEFAULT_LLM_TOKEN_RATE = 50.0
DEFAULT_TTS_FIRST_BYTE = 0.15
DEFAULT_ENDPOINTING_MS = 300  # what the gateway asks Deepgram for; read from the emulator log when it can

READY_TIMEOUT_S = 120.0  # the gateway's /readyz on a cold 2-core machine
# Call starts get phases spread over one 20 ms frame (see `call_offsets`) by this low-discrepancy step.
GOLDEN_FRACTION = 0.6180339887498949
UNDERRUN_EVENTS_KEPT = 50  # the report lists this many underruns (turn, position, gap), not all
SAMPLE_INTERVAL_S = 0.5  # psutil sampling of the gateway / emulators
LOOP_PROBE_S = 0.01  # the generator's event-loop lag probe period
SPEECH_DBFS = -40.0  # caller audio frames below this are trimmed from the utterance's ends

# When the load generator is the limit. A generator process above this share of its core cannot
# keep 20 ms clocks; generator + emulators sharing one core above CORE_LIMIT_PCT likewise.
LOADGEN_CPU_LIMIT_PCT = 85.0
CORE_LIMIT_PCT = 90.0
LOOP_LAG_LIMIT_MS = 20.0  # p99 lateness of a 10 ms timer: caller timestamps are that much off
# p95 over calls of each call's worst frame lateness: a single 40 ms hiccup in a 30 s call is two frames
# sent back to back (harmless); most calls seeing 3+ frames late means the sender is falling behind.
SEND_LAG_LIMIT_MS = 60.0
SLIP_CALLS_LIMIT = 0.01  # share of calls whose send clock slipped (a >100 ms stall)
# CPU used by processes outside the benchmark (another test suite on a shared machine) above this,
# in % of one core averaged over the load, makes every figure suspect: the report says so.
OTHER_WORK_LIMIT_PCT = 15.0


# The providers the gateway reaches, in the order `--spawn` starts their emulators (the first also
# serves the log's other parts and the settings).
EMULATOR_ROLES = ("deepgram", "openai", "elevenlabs")


# ------------------------------------------------------------------ options


@dataclass
class BenchOptions:
    url: str = ""
    metrics_url: str = ""
    gateway_pid: int | None = None
    emulators_url: str = ""
    gateway_db: str = ""  # a running gateway's VOICEGATE_DB, read for the kind of each turn's reply
    spawn: bool = False
    offline: bool = False  # --spawn the gateway on its local engines, no emulators
    concurrency: int = 10
    calls: int = 0  # total calls; 0 = concurrency
    duration_s: float = 600.0
    ramp_s: float | None = None
    max_call_s: float = 90.0
    max_reply_wait_s: float = 10.0
    reply_quiet_ms: int = 700
    conversation: str = "booking"
    turns: int = 0  # 0: the conversation's own length (booking: 3 of its 4 lines, as always)
    barge_in_turn: int = 1  # -1: none
    barge_in_ms: int = 500
    procs: int = 1
    warmup: int = 1
    gateway_cpu: int | None = None
    loadgen_cpu: int | None = None
    emulators_cpu: int | None = None
    split_emulators: bool = True  # --spawn: one emulator process per provider role
    nice: int | None = None  # nice value of everything the bench runs (negative: ahead of other work; root)
    stt_final_delay: float = DEFAULT_STT_FINAL_DELAY
    llm_first_token: float = DEFAULT_LLM_FIRST_TOKEN
    llm_token_rate: float = DEFAULT_LLM_TOKEN_RATE
    tts_first_byte: float = DEFAULT_TTS_FIRST_BYTE
    llm_reply: str = LLM_REPLY
    unique_replies: bool = True  # a numbered LLM_REPLY_TEMPLATE per request, then llm_reply
    gateway_log_level: str = "INFO"
    latency_mode: str = "disabled"  # every reply through the LLM: the providers' share is then known
    eos_wait_ms: float | None = None  # end-of-speech wait to subtract; default: the Deepgram endpointing asked for
    first_phrase_rule: str = "gateway"  # how the target cuts its first phrase (FIRST_PHRASE_RULES)
    gateway_env: dict[str, str] = field(default_factory=dict)
    gateway_command: str = ""  # replaces `python -m gateway serve` (e.g. under py-spy)
    voice: str = "piper"  # piper | synthetic
    json_path: str = ""
    label: str = ""
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.turns == 0:  # the whole conversation (booking: its first 3 lines, as it has always run)
            self.turns = conversations.DEFAULT_TURNS[self.conversation]

    @property
    def total_calls(self) -> int:
        return self.calls or self.concurrency

    @property
    def ramp(self) -> float:
        # 50 ms between call starts: 100 calls come up over 5 s.
        return self.ramp_s if self.ramp_s is not None else 0.05 * max(0, self.concurrency - 1)


def build_parser() -> argparse.ArgumentParser:
    d = BenchOptions()
    p = argparse.ArgumentParser(prog="voicegate bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("target")
    g.add_argument("--url", default="", help="media stream URL of a running gateway (ws://host:port/twilio/media)")
    g.add_argument("--metrics-url", default="", help="its /metrics (default: derived from --url; none if unreachable)")
    g.add_argument("--gateway-pid", type=int, default=None, help="sample this process's CPU and RSS")
    g.add_argument("--emulators-url", default="", help="the emulators the gateway uses: read their latencies")
    g.add_argument("--gateway-db", default="", help="the gateway's VOICEGATE_DB: voice-to-voice per reply kind")
    g.add_argument("--first-phrase", dest="first_phrase_rule", choices=FIRST_PHRASE_RULES, default="gateway",
                   help="how the target cuts the LLM stream into its first spoken phrase: voicegate's chunker, "
                        "or a whole sentence (Pipecat), for the providers' share of the caller-side overhead")
    g.add_argument("--eos-wait-ms", type=float, default=None,
                   help="end-of-speech wait subtracted for the caller-side overhead (default: the Deepgram "
                        "endpointing the target asked the emulator for)")
    g.add_argument("--spawn", action="store_true", help="start emulators + gateway here, stop them after")
    g.add_argument("--offline", action="store_true", help="with --spawn: the gateway's local engines, no emulators")
    g = p.add_argument_group("load")
    g.add_argument("-c", "--concurrency", type=int, default=d.concurrency, help="calls in flight")
    g.add_argument("--calls", type=int, default=d.calls, help="calls in total (0 = --concurrency)")
    g.add_argument("--duration", dest="duration_s", type=float, default=d.duration_s,
                   help="no call starts after this (s); the run ends by duration + max-call-s")
    g.add_argument("--ramp-s", type=float, default=None, help="spread call starts over this (default 50 ms apart)")
    g.add_argument("--max-call-s", type=float, default=d.max_call_s)
    g.add_argument("--max-reply-wait-s", type=float, default=d.max_reply_wait_s)
    g.add_argument("--reply-quiet-ms", type=int, default=d.reply_quiet_ms)
    g.add_argument("--conversation", choices=tuple(conversations.CONVERSATIONS), default=d.conversation,
                   help="what the callers say: booking phrases the rules understand, or an off-script "
                        "conversation (most turns need the LLM to understand them or answer)")
    g.add_argument("--turns", type=int, default=0,
                   help="caller utterances per call (0: the conversation's default; at most its length)")
    g.add_argument("--barge-in-turn", type=int, default=d.barge_in_turn, help="this turn barges in (-1: none)")
    g.add_argument("--barge-in-ms", type=int, default=d.barge_in_ms, help="...this long after the reply starts")
    g.add_argument("--procs", type=int, default=d.procs, help="load generator processes")
    g.add_argument("--warmup", type=int, default=d.warmup, help="calls before measuring (loads lazy imports)")
    g.add_argument("--voice", choices=("piper", "synthetic"), default=d.voice,
                   help="caller audio: the local Piper voice, or a speech-like synthetic signal")
    g = p.add_argument_group("pinning (Linux)")
    g.add_argument("--gateway-cpu", type=int, default=None, help="pin the (spawned or --gateway-pid) gateway")
    g.add_argument("--loadgen-cpu", type=int, default=None, help="pin this process and the generator processes")
    g.add_argument("--emulators-cpu", type=int, default=None, help="pin the spawned emulators (default: --loadgen-cpu)")
    g.add_argument("--nice", type=int, default=None,
                   help="run the generator and the spawned processes at this nice value (e.g. -15 on a shared "
                        "machine, as root) so other work does not take their CPU")
    g = p.add_argument_group("emulated providers (--spawn)")
    g.add_argument("--one-emulator", dest="split_emulators", action="store_false",
                   help="serve all the emulated providers from one process (default: one process per provider, "
                        "so the Deepgram emulator's audio work does not delay the LLM and TTS emulators' stamps)")
    g.add_argument("--stt-final-delay", type=float, default=d.stt_final_delay, help="s after end of speech")
    g.add_argument("--llm-first-token", type=float, default=d.llm_first_token, help="s")
    g.add_argument("--llm-token-rate", type=float, default=d.llm_token_rate, help="tokens/s")
    g.add_argument("--tts-first-byte", type=float, default=d.tts_first_byte, help="s")
    g.add_argument("--llm-reply", default=d.llm_reply, help="the LLM's reply (after the unique ones run out)")
    g.add_argument("--same-reply", dest="unique_replies", action="store_false",
                   help="every LLM answer is --llm-reply (lets the gateway's TTS cache answer repeats)")
    g.add_argument("--gateway-log-level", default=d.gateway_log_level)
    g.add_argument("--latency-mode", default=d.latency_mode, help="LATENCY_OPTIMIZATION_MODE of the spawned gateway")
    g.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the spawned gateway (repeatable)")
    g.add_argument("--gateway-command", default="",
                   help="run the spawned gateway with this command line instead of `python -m gateway serve` "
                        "(e.g. under a profiler); its pid must be the gateway's (use exec)")
    g = p.add_argument_group("output")
    g.add_argument("--json", dest="json_path", default="", help="write the report here")
    g.add_argument("--label", default="", help="a name for this run in the report")
    g.add_argument("-q", "--quiet", action="store_true", help="no table on stdout")
    return p


def options_from_args(argv: Sequence[str]) -> BenchOptions:
    args = build_parser().parse_args(list(argv))
    values = vars(args)
    env = {}
    for item in values.pop("gateway_env"):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--gateway-env must look like NAME=VALUE, not {item!r}")
        env[name] = value
    opts = BenchOptions(**values, gateway_env=env)
    if not opts.spawn and not opts.url:
        raise ValueError("give --url of a running gateway, or --spawn")
    if opts.offline and not opts.spawn:
        raise ValueError("--offline only applies to --spawn")
    if opts.concurrency < 1 or opts.total_calls < 1 or opts.procs < 1:
        raise ValueError("--concurrency, --calls and --procs must be positive")
    lines = conversations.lines(opts.conversation)
    if not 1 <= opts.turns <= len(lines):
        raise ValueError(f"--turns must be 1-{len(lines)} for the {opts.conversation} conversation")
    if opts.emulators_cpu is None:
        opts.emulators_cpu = opts.loadgen_cpu
    return opts


# ------------------------------------------------------------------ the caller's audio


def render_utterances(texts: Sequence[str], voice: str = "piper") -> dict[str, bytes]:
    """Each text as 8 kHz mu-law, trimmed to its voiced frames (so `speech_end` is the last word's
    end, not Piper's trailing silence). `synthetic` needs no model: a buzz with a syllable envelope."""
    out = {}
    for text in texts:
        if voice == "piper":
            from providers.piper_tts import PiperEngine

            audio = PiperEngine.shared().synthesize_mulaw(text)
        else:
            audio = synthetic_speech(len(text) * 0.06, seed=len(text))
        out[text] = trim_silence(audio)
    return out


def synthetic_speech(seconds: float, seed: int = 0) -> bytes:
    import numpy as np

    from audio import mulaw

    t = np.arange(int(seconds * 8000)) / 8000.0
    f0 = 140.0 + 10 * (seed % 5)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    samples = (tone * envelope * 3000).astype(np.int16)
    return mulaw.encode(samples)


def trim_silence(audio: bytes) -> bytes:
    import numpy as np

    from audio import mulaw

    n = len(audio) // FRAME_BYTES
    if n == 0:
        return audio
    pcm = mulaw.decode(audio[: n * FRAME_BYTES]).astype(np.float64).reshape(n, FRAME_BYTES)
    level = 10 * np.log10(np.maximum((pcm ** 2).mean(axis=1), 1e-9) / 32768.0 ** 2)
    voiced = np.nonzero(level > SPEECH_DBFS)[0]
    if voiced.size == 0:
        return audio
    return audio[voiced[0] * FRAME_BYTES: (voiced[-1] + 1) * FRAME_BYTES]


def caller_script(audio: dict[str, bytes], opts: BenchOptions) -> list[CallerTurn]:
    turns = []
    for i, text in enumerate(conversations.lines(opts.conversation)[: opts.turns]):
        barge = opts.barge_in_ms if i == opts.barge_in_turn else None
        turns.append(CallerTurn(text=text, audio=audio[text], barge_in_ms=barge))
    return turns


# ------------------------------------------------------------------ the share the providers take


FIRST_PHRASE_RULES = ("gateway", "sentence")


def first_phrase_token(tokens: Sequence[str], rule: str = "gateway") -> int:
    """Index of the streamed token on whose arrival the target has its first speakable phrase.
    `gateway`: voicegate's own chunker (it may speak a first clause such as "Sure,"). `sentence`: a
    whole first sentence, known once the token after its terminator arrives (Pipecat's sentence
    aggregation, which looks ahead one character past the punctuation)."""
    if rule == "gateway":
        from dialog.chunker import SentenceChunker

        chunker = SentenceChunker()
        for i, token in enumerate(tokens):
            if chunker.push(token):
                return i
    elif rule == "sentence":
        for i, token in enumerate(tokens[:-1]):
            if token.rstrip().endswith((".", "!", "?")):
                return i + 1
    else:
        raise ValueError(f"first-phrase rule must be one of {FIRST_PHRASE_RULES}, not {rule!r}")
    return len(tokens) - 1  # no phrase before the end: the stream's last token flushes it


def provider_share_ms(stt_final_delay: float, llm_first_token: float, llm_token_rate: float,
                      tts_first_byte: float, reply: str, rule: str = "gateway") -> dict[str, float]:
    """The emulated providers' configured time on a turn's critical path, in ms: the STT final after
    endpointing, the LLM's first token plus the tokens until the target has a first speakable phrase
    (see `first_phrase_token`), and the TTS first byte."""
    from emulators.openai import tokenize

    k = first_phrase_token(tokenize(reply), rule)
    step = 1.0 / llm_token_rate if llm_token_rate > 0 else 0.0
    return {
        "stt_final_ms": stt_final_delay * 1000,
        "llm_first_phrase_ms": (llm_first_token + k * step) * 1000,
        "tts_first_byte_ms": tts_first_byte * 1000,
    }


# ------------------------------------------------------------------ statistics


def parse_histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of an unlabelled Prometheus histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def bucket_deltas(before: dict[float, float], after: dict[float, float]) -> list[tuple[float, float]]:
    """(le, cumulative count observed between the two scrapes), by bucket bound."""
    return [(le, after[le] - before.get(le, 0.0)) for le in sorted(after)]


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float | None, int]:
    """q-quantile of the observations between two scrapes, interpolated inside a bucket like
    Prometheus' histogram_quantile; (value, count). Past the last finite bucket: its bound."""
    delta = bucket_deltas(before, after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None, 0
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if math.isinf(le):
                return prev_le, int(total)
            span = count - prev_count
            frac = (rank - prev_count) / span if span > 0 else 1.0
            return prev_le + (le - prev_le) * frac, int(total)
        prev_le, prev_count = le, count
    return prev_le, int(total)


def gc_pause_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, Any] | None:
    """The gateway's paced collections between two scrapes: how many, and the bucket the longest fell in."""
    if not after:
        return None
    delta = bucket_deltas(before, after)
    n = int(delta[-1][1])
    longest = next((le for le, count in delta if count >= n), None) if n else None
    p50, _ = histogram_quantile(before, after, 0.5)
    return {"n": n, "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "longest_under_ms": None if longest is None or math.isinf(longest) else round(longest * 1000, 2),
            "source": "voicegate_gc_pause_seconds bucket deltas"}


# ------------------------------------------------------------------ processes: pinning, sampling


def pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of `pid` to one CPU (threads created later inherit it)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})


def pinned_command(cmd: list[str], cpu: int | None, nice: int | None = None) -> list[str]:
    """`nice -n N taskset -c CPU cmd`: priority and affinity are set before the program starts any
    thread, so every thread inherits them."""
    if cpu is not None and shutil.which("taskset"):
        cmd = [shutil.which("taskset"), "-c", str(cpu), *cmd]
    if nice is not None and shutil.which("nice"):
        cmd = [shutil.which("nice"), "-n", str(nice), *cmd]
    return cmd


def set_nice(nice: int | None) -> None:
    """This thread's (and its future threads') nice value; a refusal (not root) is only a warning."""
    if nice is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        print(f"voicegate bench: cannot set nice {nice}: {exc}", file=sys.stderr)


class Sampler:
    """Samples CPU (% of one core) and RSS of named processes every SAMPLE_INTERVAL_S."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        import psutil

        self.procs = {}
        for name, pid in pids.items():
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                proc.cpu_percent(None)
                self.procs[name] = proc
        self.samples: dict[str, list[tuple[float, float, int, int, int]]] = {n: [] for n in self.procs}
        self.cores: list[tuple[float, list[float]]] = []  # (t, busy % of each CPU): other work shows here
        self._task: asyncio.Task | None = None

    def snapshot(self, name: str) -> dict[str, int] | None:
        import psutil

        proc = self.procs.get(name)
        if proc is None:
            return None
        try:
            with proc.oneshot():
                return {"rss": proc.memory_info().rss, "threads": proc.num_threads(), "fds": proc.num_fds(),
                        "tcp": len(proc.net_connections("tcp"))}
        except psutil.Error:
            return None

    def reset_cpu(self) -> None:
        import psutil

        psutil.cpu_percent(None, percpu=True)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.cpu_percent(None)

    async def _run(self) -> None:
        import psutil

        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            t = time.monotonic()
            self.cores.append((t, psutil.cpu_percent(None, percpu=True)))
            for name, proc in self.procs.items():
                try:
                    with proc.oneshot():
                        self.samples[name].append((t, proc.cpu_percent(None), proc.memory_info().rss,
                                                   proc.num_threads(), proc.num_fds()))
                except psutil.Error:
                    pass

    def start(self) -> None:
        self.reset_cpu()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> str | None:
    if not url:
        return None
    try:
        status, body = http_get(url, timeout=10)
    except OSError:
        return None
    return body.decode(errors="replace") if status == 200 else None


# ------------------------------------------------------------------ spawning emulators and gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """What `--spawn` started: the emulators (unless offline) and one gateway process."""

    url: str
    metrics_url: str
    gateway_pid: int
    emulators_url: str = ""
    emulators_pid: int | None = None
    gateway_log: Path | None = None
    emulators_log: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    emulator_roles: dict[str, tuple[str, int]] = field(default_factory=dict)  # role -> (url, pid) when split
    gateway_db: str = ""


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=2)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout:g} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def llm_replies(opts: BenchOptions) -> list[str]:
    """One unique reply per LLM request the run can make (greeting + turns + re-asks, per call, twice over)."""
    if not opts.unique_replies:
        return []
    requests = (opts.total_calls + opts.warmup) * (opts.turns + 2) * 2
    return [LLM_REPLY_TEMPLATE.format(n=n) for n in range(1, requests + 1)]


def emulator_command(port: int, opts: BenchOptions, tmp: Path) -> list[str]:
    cmd = [sys.executable, "-m", "emulators.cli", "--port", str(port),
           "--stt-final-delay", str(opts.stt_final_delay), "--llm-first-token", str(opts.llm_first_token),
           "--llm-token-rate", str(opts.llm_token_rate), "--tts-first-byte", str(opts.tts_first_byte),
           "--llm-reply", opts.llm_reply]
    replies = llm_replies(opts)
    if replies:
        script = tmp / "llm-script.json"
        script.write_text(json.dumps(replies))
        cmd += ["--llm-script", str(script)]
    for text in conversations.lines(opts.conversation):
        cmd += ["--transcript", text]
    rules = conversations.llm_rules(opts.conversation)
    if rules:  # what the emulated model does with each off-script line: speak, call the tool, both
        path = tmp / "llm-rules.json"
        path.write_text(json.dumps(rules))
        cmd += ["--llm-rules", str(path)]
    return cmd


def start_emulators(opts: BenchOptions, tmp: Path, name: str = "emulators") -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(pinned_command(emulator_command(port, opts, tmp), opts.emulators_cpu, opts.nice),
                                cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_emulator/config", proc, 30, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url, log


def gateway_env(port: int, tmp: Path, opts: BenchOptions, emulators_url: str,
                role_urls: dict[str, str] | None = None) -> dict[str, str]:
    """`role_urls`: a provider role's own emulator (`EMULATOR_ROLES`), else `emulators_url` serves it."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("TWILIO_")}
    env.update({
        "PORT": str(port), "HOST": "127.0.0.1", "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VOICEGATE_DB": str(tmp / "voicegate.db"), "LOG_LEVEL": opts.gateway_log_level, "PYTHONUNBUFFERED": "1",
        "MAX_CONCURRENT_CALLS": str(max(200, 2 * opts.concurrency)),
        "LATENCY_OPTIMIZATION_MODE": opts.latency_mode,
    })
    if opts.voice == "synthetic":
        # A buzz with a syllable envelope is not speech to a speech model, which is right: the gateway's
        # model VAD would (correctly) take no turn from it. The synthetic voice measures the call path
        # on the energy VAD alone; the Piper voice (the default) measures it with the model VAD on.
        env["MODEL_VAD"] = "0"
    if not opts.offline:
        url = {role: (role_urls or {}).get(role, emulators_url) for role in EMULATOR_ROLES}
        env.update({
            "VOICEGATE_LOCAL_ENGINES": "0",
            "DEEPGRAM_API_KEY": "dg-bench", "DEEPGRAM_BASE_URL": "ws" + url["deepgram"][len("http"):],
            "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": url["openai"] + "/v1",
            "ELEVENLABS_API_KEY": "xi-bench", "ELEVENLABS_BASE_URL": url["elevenlabs"],
        })
    env.update(opts.gateway_env)
    return env


@contextlib.contextmanager
def spawned_stack(opts: BenchOptions) -> Iterator[Stack]:
    """Emulators (pinned to --emulators-cpu) and the gateway (pinned to --gateway-cpu), torn down on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        emulators_url, emulators_pid, emulators_log = "", None, None
        roles: dict[str, tuple[str, int]] = {}
        if not opts.offline:
            emu, emulators_url, emulators_log = start_emulators(opts, tmp)
            procs.append(emu)
            emulators_pid = emu.pid
            # The first process serves Deepgram (and the log's other parts); each other role gets its own.
            for role in EMULATOR_ROLES[1:] if opts.split_emulators else ():
                proc, url, _ = start_emulators(opts, tmp, name=f"emulators-{role}")
                procs.append(proc)
                roles[role] = (url, proc.pid)
        port = free_port()
        log = tmp / "gateway.log"
        with log.open("wb") as f:
            command = shlex.split(opts.gateway_command) or [sys.executable, "-m", "gateway", "serve"]
            gw = subprocess.Popen(pinned_command(command, opts.gateway_cpu, opts.nice),
                                  cwd=ROOT, env=gateway_env(port, tmp, opts, emulators_url,
                                                            {role: url for role, (url, _) in roles.items()}),
                                  stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{port}/readyz", gw, READY_TIMEOUT_S, log)
        yield Stack(url=f"ws://127.0.0.1:{port}/twilio/media", metrics_url=f"http://127.0.0.1:{port}/metrics",
                    gateway_pid=gw.pid, emulators_url=emulators_url, emulators_pid=emulators_pid,
                    gateway_log=log, emulators_log=emulators_log, processes=procs, emulator_roles=roles,
                    gateway_db=str(tmp / "voicegate.db"))
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        if os.environ.get("VOICEGATE_BENCH_KEEP_LOGS"):
            print(f"bench logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ the load generator


def call_record(report: CallReport, started: float, ended: float) -> dict[str, Any]:
    """What the parent needs of one call: compact and picklable (no audio)."""
    played = sum(n for _, n in report.heard_segments)
    return {
        "call_sid": report.call_sid,
        "error": report.error,
        "completed": report.completed,
        "hung_up": report.hung_up_by_gateway,
        "started": started,
        "ended": ended,
        "greeting_ms": report.greeting_latency_ms,
        "turns": [{"rule": t.rule, "latency_ms": t.latency_ms, "clear_ms": t.clear_ms, "barged_in": t.barged_in,
                   "interrupted": t.interrupted, "underruns": t.underruns, "reply_timeout": t.reply_timeout,
                   "reply_ms": t.reply_ms, "kind": t.kind, "text": t.text,
                   # monotonic, for wire_hops
                   "speech_end": t.speech_end, "reply_arrival": t.reply_arrival, "sends_after_end": t.sends_after_end}
                  for t in report.turns],
        "underruns": report.underruns,
        "underrun_gap_ms": sum(report.underrun_gaps_ms),
        # Where each gap fell: which turn (-1 is the greeting), how far into its reply, how long.
        "underrun_events": [{"turn": t.index, "at_ms": round(at, 1), "gap_ms": round(gap, 1)}
                            for t in report.turns for at, gap in zip(t.underrun_at_ms, t.underrun_gaps_ms)],
        "played_frames": played / FRAME_BYTES,
        "clock_slip_ms": report.clock_slip_ms,
        "max_send_lag_ms": report.max_send_lag_ms,
        "frames_sent": report.frames_sent,
    }


@dataclass
class GeneratorPlan:
    url: str
    lanes: list[float]  # start offset (s) of each lane: a lane runs calls one after another
    calls: int  # calls this generator places in total
    t0: float  # monotonic time of offset 0
    stop_starting_at: float  # monotonic: no call starts after this
    hard_deadline: float
    turns: list[CallerTurn]
    max_call_s: float
    max_reply_wait_s: float
    reply_quiet_ms: int
    cpu: int | None = None
    nice: int | None = None


async def _loop_probe(lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(LOOP_PROBE_S)
        lags.append((loop.time() - t - LOOP_PROBE_S) * 1000)


async def generate(plan: GeneratorPlan) -> dict[str, Any]:
    """Run a generator's lanes; returns the call records and the generator's own costs."""
    import psutil

    me = psutil.Process()
    records: list[dict[str, Any]] = []
    remaining = [plan.calls]
    lags: list[float] = []
    probe = asyncio.get_running_loop().create_task(_loop_probe(lags))

    async def lane(offset: float) -> None:
        await asyncio.sleep(max(0.0, plan.t0 + offset - time.monotonic()))
        while remaining[0] > 0 and time.monotonic() < plan.stop_starting_at:
            remaining[0] -= 1
            started = time.monotonic()
            budget = min(plan.max_call_s, plan.hard_deadline - started)
            if budget <= 0:
                return
            report = await run_call(plan.url, plan.turns, max_call_s=budget, max_reply_wait_s=plan.max_reply_wait_s,
                                    reply_quiet_ms=plan.reply_quiet_ms, record_audio=False,
                                    parameters={"caller": "+15550100000"})
            records.append(call_record(report, started, time.monotonic()))

    cpu0, wall0 = me.cpu_times(), time.monotonic()
    try:
        await asyncio.gather(*(lane(o) for o in plan.lanes))
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    cpu1, wall1 = me.cpu_times(), time.monotonic()
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"records": records, "cpu_pct": 100.0 * busy / max(1e-9, wall1 - wall0), "loop_lag_ms": lags,
            "pid": os.getpid()}


def _run_loop(coro):
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _generator_process(plan: GeneratorPlan, conn) -> None:
    if plan.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {plan.cpu})
    set_nice(plan.nice)
    try:
        conn.send(_run_loop(generate(plan)))
    except BaseException as exc:  # report it to the parent instead of dying silently
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def call_offsets(concurrency: int, ramp: float) -> list[float]:
    """When each lane's first call starts: spread over `ramp`, and at well-spread phases of the 20 ms
    frame clock. Independent callers' frames arrive at unrelated instants; starts an exact multiple
    of 10 ms apart would put every call's frame into two bursts per 20 ms, which a real Twilio load
    never does and which turns the gateway's event loop into a batch processor (its p99 latency is
    then one burst's length). The golden-ratio sequence spreads any number of lanes evenly."""
    if concurrency <= 1:
        return [0.0] * max(concurrency, 0)
    spacing = ramp / (concurrency - 1)
    return [spacing * i + FRAME_S * ((i * GOLDEN_FRACTION) % 1.0) for i in range(concurrency)]


async def run_generators(opts: BenchOptions, url: str, turns: list[CallerTurn]) -> list[dict[str, Any]]:
    """Split the lanes over `opts.procs` generators (this process when 1) and run them."""
    now = time.monotonic()
    t0 = now + 0.5 if opts.procs > 1 else now  # child processes need a moment to start
    c = opts.concurrency
    offsets = call_offsets(c, opts.ramp)
    plans = []
    for k in range(opts.procs):
        lanes = offsets[k:: opts.procs]
        if not lanes:
            continue
        share = opts.total_calls * len(lanes) // c + (1 if k < opts.total_calls * len(lanes) % c else 0)
        share = max(share, 0)
        plans.append(GeneratorPlan(
            url=url, lanes=lanes, calls=share, t0=t0, stop_starting_at=now + opts.duration_s,
            hard_deadline=now + opts.duration_s + opts.max_call_s, turns=turns, max_call_s=opts.max_call_s,
            max_reply_wait_s=opts.max_reply_wait_s, reply_quiet_ms=opts.reply_quiet_ms, cpu=opts.loadgen_cpu,
            nice=opts.nice))
    # Hand out any rounding remainder so --calls is honoured exactly.
    missing = opts.total_calls - sum(p.calls for p in plans)
    for p in plans:
        if missing <= 0:
            break
        p.calls += 1
        missing -= 1
    if len(plans) == 1:
        return [await generate(plans[0])]
    ctx = multiprocessing.get_context("spawn")
    children = []
    for plan in plans:
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_generator_process, args=(plan, child_conn), daemon=True)
        proc.start()
        child_conn.close()
        children.append((proc, parent_conn))
    loop = asyncio.get_running_loop()
    results = []
    limit = opts.duration_s + opts.max_call_s + 30
    for proc, conn in children:
        try:
            ready = await loop.run_in_executor(None, conn.poll, max(1.0, limit - (time.monotonic() - now)))
            results.append(conn.recv() if ready else {"error": "generator process did not report in time"})
        except EOFError:
            results.append({"error": f"generator process died (exit {proc.exitcode})"})
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    return results


# ------------------------------------------------------------------ one run


@dataclass
class Target:
    url: str
    metrics_url: str
    gateway_pid: int | None
    emulators_url: str
    emulators_pid: int | None
    emulator_roles: dict[str, tuple[str, int]] = field(default_factory=dict)  # role -> (url, pid): its own process
    gateway_db: str = ""  # the gateway's store: the kind of each turn's reply


def read_emulator_settings(emulators_url: str) -> dict[str, Any] | None:
    try:
        status, body = http_get(emulators_url + "/_emulator/config")
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def read_emulator_log(emulators_url: str, roles: dict[str, tuple[str, int]] | None = None) -> dict | None:
    """Everything the emulators recorded (the endpointing asked for, the hop times of
    `loadgen.wire_hops`); None if unreadable. A role served by its own process (`roles`) is read there."""
    try:
        status, body = http_get(emulators_url + "/_emulator/log", timeout=60)
        if status != 200:
            return None
        log = json.loads(body)
        for role, (url, _) in (roles or {}).items():
            status, body = http_get(url + "/_emulator/log", timeout=60)
            log[role] = json.loads(body).get(role, []) if status == 200 else []
    except OSError:
        return None
    return log


def endpointing_from_log(log: dict | None) -> int | None:
    """The `endpointing` the client asked the Deepgram emulator for (the first live connection)."""
    for record in (log or {}).get("deepgram", []):
        value = record.get("query", {}).get("endpointing")
        if value is not None:
            return None if str(value).lower() == "false" else int(float(value))
    return None


async def bench(opts: BenchOptions, target: Target) -> dict[str, Any]:
    """Warm up, measure the idle gateway, run the load, measure again; the report as a dict."""
    if opts.loadgen_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {opts.loadgen_cpu})
    set_nice(opts.nice)
    if not opts.spawn and target.gateway_pid is not None:
        pin(target.gateway_pid, opts.gateway_cpu)  # a spawned gateway was started under taskset
    audio = await asyncio.to_thread(render_utterances, conversations.lines(opts.conversation)[: opts.turns], opts.voice)
    turns = caller_script(audio, opts)

    emulated = read_emulator_settings(target.emulators_url) if target.emulators_url else None
    warm_errors = []
    for _ in range(opts.warmup):
        report = await run_call(target.url, turns[:1], max_call_s=opts.max_call_s, record_audio=False,
                                max_reply_wait_s=opts.max_reply_wait_s, reply_quiet_ms=opts.reply_quiet_ms)
        if report.error:
            warm_errors.append(report.error)
    await asyncio.sleep(1.0)  # let the warm-up call's sockets close before the idle baseline

    sampler = Sampler({"gateway": target.gateway_pid, "emulators": target.emulators_pid,
                       **{f"emulators-{role}": pid for role, (_, pid) in target.emulator_roles.items()}})
    idle = sampler.snapshot("gateway")
    before = await asyncio.to_thread(scrape, target.metrics_url)
    sampler.start()
    t_start = time.monotonic()
    results = await run_generators(opts, target.url, turns)
    t_end = time.monotonic()
    await sampler.stop()
    after = await asyncio.to_thread(scrape, target.metrics_url)
    await asyncio.sleep(2.0)  # calls' provider sockets close
    settled = sampler.snapshot("gateway")
    emulator_log = await asyncio.to_thread(read_emulator_log, target.emulators_url, target.emulator_roles) \
        if target.emulators_url else None
    if target.gateway_db:
        await asyncio.to_thread(add_reply_kinds, target.gateway_db, [r for res in results for r in res.get("records", [])])
    return build_report(opts, target, results, sampler, idle, settled, before, after, emulated,
                        endpointing_from_log(emulator_log), warm_errors, t_start, t_end, emulator_log)


def add_reply_kinds(db_path: str, records: list[dict[str, Any]]) -> None:
    """Each caller turn's `reply_kind` from the gateway's own record of the call (its store): what the
    first reply audio waited for. Matched by the words, in order: the gateway's turn of a caller line
    is the next one stored with that transcript."""
    from dialog.store import Store

    try:
        store = Store(db_path)
    except Exception:  # no store, no kinds: the rest of the report stands
        return
    try:
        for record in records:
            call = store.get_call(record.get("call_sid") or "") if record.get("call_sid") else None
            stored = [t for t in (call or {}).get("turns", []) if t.get("user_text")]
            i = 0
            for turn in record["turns"]:
                j = next((k for k in range(i, len(stored)) if stored[k]["user_text"] == turn.get("text")), None)
                if j is None:
                    continue
                turn["reply_kind"] = (stored[j].get("timings") or {}).get("reply_kind")
                i = j + 1
    finally:
        store.close()


def latency_by(records: list[dict[str, Any]], key) -> dict[str, dict[str, Any]]:
    """Voice-to-voice of the answered turns, grouped by `key(turn)` (groups of None left out)."""
    groups: dict[str, list[float]] = {}
    for record in records:
        for turn in record["turns"]:
            group = key(turn)
            if group is not None and turn["latency_ms"] is not None:
                groups.setdefault(group, []).append(turn["latency_ms"])
    return {group: summarize(values) for group, values in sorted(groups.items())}


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 1)


def _window_cpu(samples: list[tuple[float, float, int, int, int]], windows: list[tuple[float, float]],
                level: int) -> tuple[float | None, float | None]:
    """Mean CPU over samples when at least `level` calls were up, and over samples with any call up."""
    def active(t: float) -> int:
        return sum(1 for a, b in windows if a <= t <= b)

    steady = [cpu for t, cpu, *_ in samples if active(t) >= level]
    loaded = [cpu for t, cpu, *_ in samples if active(t) > 0]
    mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    return mean(steady), mean(loaded)


def loadgen_limits(loadgen: dict[str, Any], emulators_cpu_on_same_core: float | None, calls: int) -> list[str]:
    """Why the load generator, not the target, may have been the limit (empty: it kept up). Takes the
    report's `loadgen` section, so a saved report can be judged again with these bounds."""
    reasons = []
    gen_cpu = loadgen.get("cpu_pct") or []
    if gen_cpu and max(gen_cpu) >= LOADGEN_CPU_LIMIT_PCT:
        reasons.append(f"a generator process used {max(gen_cpu):.0f}% of its core (limit {LOADGEN_CPU_LIMIT_PCT:.0f}%)")
    if emulators_cpu_on_same_core is not None and gen_cpu:
        core = sum(gen_cpu) + emulators_cpu_on_same_core
        if core >= CORE_LIMIT_PCT:
            reasons.append(f"generator + emulators used {core:.0f}% of their core (limit {CORE_LIMIT_PCT:.0f}%)")
    lag99 = loadgen["loop_lag_ms"]["p99"]
    if lag99 is not None and lag99 > LOOP_LAG_LIMIT_MS:
        reasons.append(f"generator event loop p99 lag {lag99:.0f} ms (limit {LOOP_LAG_LIMIT_MS:.0f} ms)")
    send95 = loadgen["max_send_lag_ms"]["p95"]
    if send95 is not None and send95 > SEND_LAG_LIMIT_MS:
        reasons.append(f"p95 of the calls' worst frame lateness {send95:.0f} ms (limit {SEND_LAG_LIMIT_MS:.0f} ms)")
    if calls and loadgen["calls_with_clock_slip"] > SLIP_CALLS_LIMIT * calls:
        reasons.append(f"{loadgen['calls_with_clock_slip']} call(s) had their 20 ms send clock slip")
    if loadgen.get("errors"):
        reasons.append("generator process failure: " + "; ".join(loadgen["errors"]))
    return reasons


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it (results of a moving tree
    are only comparable with the same `dirty_files`)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "audio", "providers", "dialog"],
                                cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    dirty = sorted(line[3:] for line in status if not line.endswith("loadgen/bench.py"))  # the tool, not the target
    return {"commit": commit or None, "dirty_files": dirty}


def build_report(opts: BenchOptions, target: Target, results: list[dict[str, Any]], sampler: Sampler,
                 idle: dict | None, settled: dict | None, before: str | None, after: str | None,
                 emulated: dict | None, endpointing: int | None, warm_errors: list[str],
                 t_start: float, t_end: float, emulator_log: dict | None = None) -> dict[str, Any]:
    records = [r for res in results for r in res.get("records", [])]
    gen_errors = [res["error"] for res in results if "error" in res]
    # A call failed if it ended in error, was cut before its script was done, or a turn got no reply
    # at all: from the caller's side, an agent that goes silent is a broken call.
    def failure(r: dict[str, Any]) -> str | None:
        if r["error"]:
            return r["error"]
        if not r["completed"]:
            return "hung up by the gateway before the script was done" if r["hung_up"] else "script not completed"
        silent = sum(1 for t in r["turns"] if t["reply_timeout"])
        if silent:
            return f"{silent} turn(s) got no reply within max_reply_wait_s"
        return None

    failed = [r for r in records if failure(r) is not None]
    errors: dict[str, int] = {}
    for r in failed:
        key = failure(r)[:160]
        errors[key] = errors.get(key, 0) + 1

    latencies = [t["latency_ms"] for r in records for t in r["turns"] if t["latency_ms"] is not None]
    greetings = [r["greeting_ms"] for r in records if r["greeting_ms"] is not None]
    barge_turns = [t for r in records for t in r["turns"] if t["rule"] == "barge_in"]
    clears = [t["clear_ms"] for t in barge_turns if t["clear_ms"] is not None]
    reply_timeouts = sum(1 for r in records for t in r["turns"] if t["reply_timeout"])
    turns_spoken = sum(1 for r in records for t in r["turns"])

    line_kinds = conversations.kinds(opts.conversation)
    by_line_kind = latency_by(records, lambda t: line_kinds.get(t.get("text", "")))
    by_reply_kind = latency_by(records, lambda t: t.get("reply_kind"))

    # Caller-side overhead: what is left of voice-to-voice after the configured waits. Only for a
    # conversation whose every turn has one configured share (the booking one: a phrasing each).
    overhead_caller = None
    if emulated is not None and opts.conversation == "booking":
        if opts.eos_wait_ms is not None:
            eos, eos_source = opts.eos_wait_ms, "--eos-wait-ms"
        elif endpointing is not None:
            eos, eos_source = endpointing, "endpointing the target asked the Deepgram emulator for"
        else:
            eos, eos_source = DEFAULT_ENDPOINTING_MS, "assumed (no endpointing in the emulator log)"
        share = provider_share_ms(emulated["stt_final_delay"], emulated["llm_first_token"],
                                  emulated["llm_token_rate"], emulated["tts_first_byte"],
                                  (emulated["openai"]["script"] or [emulated["openai"]["default_reply"]])[0],
                                  opts.first_phrase_rule)
        subtract = eos + sum(share.values())
        values = [v - subtract for v in latencies]
        overhead_caller = {**summarize(values), "subtracted_ms": round(subtract, 1), "end_of_speech_wait_ms": eos,
                           "end_of_speech_wait_source": eos_source, "first_phrase_rule": opts.first_phrase_rule,
                           **{k: round(v, 1) for k, v in share.items()}}

    # The gateway's hops timed on the wire (loadgen.wire_hops): the overhead without the emulators' lateness.
    overhead_wire = None
    if emulated is not None and emulator_log is not None and overhead_caller is not None:
        from emulators.openai import tokenize
        from loadgen.wire_hops import Configured, wire_overhead

        configured = Configured(overhead_caller["end_of_speech_wait_ms"], share["stt_final_ms"],
                                share["llm_first_phrase_ms"], share["tts_first_byte_ms"])
        overhead_wire = wire_overhead(
            records, emulator_log, configured=configured,
            first_phrase_token=lambda reply: first_phrase_token(tokenize(reply), opts.first_phrase_rule))

    overhead_gateway = gc_pauses = None
    if before is not None and after is not None:
        hb = parse_histogram(before, "voicegate_gateway_overhead_seconds")
        ha = parse_histogram(after, "voicegate_gateway_overhead_seconds")
        if ha:
            p50, n = histogram_quantile(hb, ha, 0.5)
            p99, _ = histogram_quantile(hb, ha, 0.99)
            first = min(le for le in ha if not math.isinf(le))
            in_first = ha[first] - hb.get(first, 0.0)
            overhead_gateway = {"n": n, "p50": None if p50 is None else round(p50 * 1000, 2),
                                "p99": None if p99 is None else round(p99 * 1000, 2),
                                # Every observation in the lowest bucket: the quantiles only say "under it".
                                "all_in_first_bucket_ms": round(first * 1000, 3) if n and in_first >= n else None,
                                "source": "voicegate_gateway_overhead_seconds bucket deltas"}
        gc_pauses = gc_pause_summary(parse_histogram(before, "voicegate_gc_pause_seconds"),
                                     parse_histogram(after, "voicegate_gc_pause_seconds"))
        vb = parse_histogram(before, "voicegate_voice_to_voice_seconds")
        va = parse_histogram(after, "voicegate_voice_to_voice_seconds")
        if va and overhead_gateway is not None:
            p50, n = histogram_quantile(vb, va, 0.5)
            overhead_gateway["gateway_voice_to_voice_p50_ms"] = None if p50 is None else round(p50 * 1000, 1)

    played = sum(r["played_frames"] for r in records)
    underruns = sum(r["underruns"] for r in records)
    gap_ms = sum(r["underrun_gap_ms"] for r in records)

    windows = [(r["started"], r["ended"]) for r in records]
    level = min(opts.concurrency, len(records)) or 1
    gateway: dict[str, Any] = {"pid": target.gateway_pid}
    gs = sampler.samples.get("gateway", [])
    if gs:
        steady, loaded = _window_cpu(gs, windows, level)
        peak_rss = max(s[2] for s in gs)
        gateway.update({
            "cpu_pct_steady": steady, "cpu_pct_load": loaded, "cpu_pct_max": round(max(s[1] for s in gs), 1),
            "rss_peak_mb": round(peak_rss / 2**20, 1), "threads_peak": max(s[3] for s in gs),
            "fds_peak": max(s[4] for s in gs),
        })
        if idle is not None:
            gateway["rss_idle_mb"] = round(idle["rss"] / 2**20, 1)
            gateway["rss_per_call_kb"] = round((peak_rss - idle["rss"]) / 1024 / opts.concurrency, 1)
    if idle is not None:
        gateway["idle"] = idle
    if settled is not None:
        gateway["after"] = settled
        gateway["rss_after_mb"] = round(settled["rss"] / 2**20, 1)
    emulators = None
    es = sampler.samples.get("emulators", [])
    if es:
        steady, loaded = _window_cpu(es, windows, level)
        emulators = {"pid": target.emulators_pid, "cpu_pct_steady": steady, "cpu_pct_load": loaded,
                     "cpu_pct_max": round(max(s[1] for s in es), 1)}
        for role, (_, pid) in target.emulator_roles.items():  # one process per role: the sum is the emulators'
            rs = sampler.samples.get(f"emulators-{role}", [])
            if rs:
                r_steady, r_loaded = _window_cpu(rs, windows, level)
                emulators[role] = {"pid": pid, "cpu_pct_steady": r_steady, "cpu_pct_load": r_loaded}
                emulators["cpu_pct_steady"] = _add(emulators["cpu_pct_steady"], r_steady)
                emulators["cpu_pct_load"] = _add(emulators["cpu_pct_load"], r_loaded)

    lags = [x for res in results for x in res.get("loop_lag_ms", [])]
    gen_cpu = [round(res["cpu_pct"], 1) for res in results if "cpu_pct" in res]
    slips = [r["clock_slip_ms"] for r in records]
    send_lag = [r["max_send_lag_ms"] for r in records]
    loadgen = {
        "procs": len(results), "cpu_pct": gen_cpu, "cpu_pct_max": max(gen_cpu) if gen_cpu else None,
        "loop_lag_ms": summarize(lags), "clock_slip_ms_total": round(sum(slips), 1),
        "calls_with_clock_slip": sum(1 for s in slips if s > 0), "max_send_lag_ms": summarize(send_lag),
        "cpu": opts.loadgen_cpu, "errors": gen_errors,
    }

    # Everything else the machine did meanwhile: busy CPU over the load minus what we measured.
    load_cores = [cores for t, cores in sampler.cores if any(a <= t <= b for a, b in windows)]
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform(), "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    if load_cores:
        per_core = [round(sum(c[i] for c in load_cores) / len(load_cores), 1) for i in range(len(load_cores[0]))]
        ours = (gateway.get("cpu_pct_load") or 0.0) + ((emulators or {}).get("cpu_pct_load") or 0.0) + sum(gen_cpu)
        machine["core_busy_pct"] = per_core
        machine["other_work_pct"] = round(max(0.0, sum(per_core) - ours), 1)

    contention = []
    if machine.get("other_work_pct", 0.0) > OTHER_WORK_LIMIT_PCT:
        contention.append(f"other processes used ~{machine['other_work_pct']:.0f}% of a core during the load "
                          f"(cores busy {machine['core_busy_pct']}%): the machine was shared")
    shared_core = opts.loadgen_cpu is not None and opts.emulators_cpu == opts.loadgen_cpu
    reasons = loadgen_limits(loadgen, (emulators or {}).get("cpu_pct_load") if shared_core else None, len(records))

    report = {
        "tool": "voicegate bench",
        "label": opts.label,
        "code": code_version(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: v for k, v in asdict(opts).items() if k not in ("json_path", "quiet")},
        "target": asdict(target),
        "machine": machine,
        "duration_s": round(t_end - t_start, 1),
        "calls": {"planned": opts.total_calls, "placed": len(records), "completed": len(records) - len(failed),
                  "failed": len(failed), "errors": errors, "warmup_errors": warm_errors},
        "turns": {"spoken": turns_spoken, "answered": len(latencies), "reply_timeouts": reply_timeouts},
        "voice_to_voice_ms": summarize(latencies),
        # By the kind of caller line (script / answer / tool), and by what the gateway's first audio
        # waited for (quick / cache / llm / llm_tool / rules), when its store was read.
        "voice_to_voice_by_line_kind_ms": by_line_kind,
        "voice_to_voice_by_reply_kind_ms": by_reply_kind,
        "greeting_ms": summarize(greetings),
        "overhead_caller_ms": overhead_caller,
        "overhead_gateway_ms": overhead_gateway,
        "overhead_wire_ms": overhead_wire,
        "gc_pauses": gc_pauses,
        "barge_in_clear_ms": {**summarize(clears, (0.5, 0.95)), "barge_ins": len(barge_turns),
                              "without_clear": len(barge_turns) - len(clears)},
        "underruns": {"count": underruns, "reply_frames": int(played),
                      "pct_frames": round(100.0 * underruns / played, 3) if played else None,
                      "gap_ms_total": round(gap_ms, 1),
                      "pct_time": round(100.0 * gap_ms / (played * 20), 3) if played else None,
                      "events": [e for r in records for e in r.get("underrun_events", ())][:UNDERRUN_EVENTS_KEPT]},
        "gateway": gateway,
        "emulators": emulators,
        "loadgen": loadgen,
        "verdict": {"loadgen_limited": bool(reasons), "reasons": reasons, "contended": bool(contention),
                    "contention": contention},
    }
    return report


# ------------------------------------------------------------------ output


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def format_report(r: dict[str, Any]) -> str:
    from loadgen.wire_hops import describe as describe_wire

    v2v, oc, og, bi, ur = r["voice_to_voice_ms"], r["overhead_caller_ms"], r["overhead_gateway_ms"], \
        r["barge_in_clear_ms"], r["underruns"]
    gw, lg, emu = r["gateway"], r["loadgen"], r["emulators"]
    c = r["calls"]
    rows = [
        ("calls", f"{c['placed']} placed at concurrency {r['config']['concurrency']}, {c['completed']} completed, "
                  f"{c['failed']} failed, {r['duration_s']} s"),
        ("turns", f"{r['turns']['answered']}/{r['turns']['spoken']} answered, {r['turns']['reply_timeouts']} reply timeouts"),
        ("voice-to-voice ms", f"p50 {_f(v2v['p50'])}  p95 {_f(v2v['p95'])}  p99 {_f(v2v['p99'])}  max {_f(v2v['max'])}"),
        ("greeting ms", f"p50 {_f(r['greeting_ms']['p50'])}  p95 {_f(r['greeting_ms']['p95'])}"),
    ]
    for title, groups in (("by caller line", r.get("voice_to_voice_by_line_kind_ms") or {}),
                          ("by reply kind", r.get("voice_to_voice_by_reply_kind_ms") or {})):
        for group, s in groups.items():
            rows.append((f"  {title}: {group}", f"p50 {_f(s['p50'])}  p95 {_f(s['p95'])}  (n={s['n']})"))
    if oc:
        rows.append(("overhead (caller) ms", f"p50 {_f(oc['p50'])}  p95 {_f(oc['p95'])}  p99 {_f(oc['p99'])}  "
                                             f"(v2v - {oc['subtracted_ms']} ms configured waits)"))
    if og:
        first = og.get("all_in_first_bucket_ms")
        rows.append(("overhead (gateway) ms", f"p50 {_f(og['p50'], digits=2)}  p99 {_f(og['p99'], digits=2)}  "
                                              f"n={og['n']} (from /metrics"
                                              + (f"; all under its lowest bucket, {first:g} ms)" if first else ")")))
    gp = r.get("gc_pauses")
    if gp and gp["n"]:
        rows.append(("gateway GC pauses", f"{gp['n']} paced collections, p50 {_f(gp['p50_ms'], digits=2)} ms, "
                                          f"longest under {_f(gp['longest_under_ms'], digits=2)} ms (from /metrics)"))
    ow = r.get("overhead_wire_ms")
    if ow:
        lines = list(describe_wire(ow))
        rows.append(("overhead (wire) ms", lines[0]))
        rows += [("", line) for line in lines[1:]]
    rows += [
        ("barge-in -> clear ms", f"p50 {_f(bi['p50'])}  p95 {_f(bi['p95'])}  ({bi['n']}/{bi['barge_ins']} cleared)"),
        ("underruns", f"{ur['count']} ({_f(ur['pct_frames'], '%', 3)} of {ur['reply_frames']} reply frames, "
                      f"{_f(ur['pct_time'], '%', 3)} of reply time)"),
        ("gateway CPU", f"{_f(gw.get('cpu_pct_steady'), '%')} of a core with all calls up, "
                        f"{_f(gw.get('cpu_pct_load'), '%')} over the load, max {_f(gw.get('cpu_pct_max'), '%')}"),
        ("gateway RSS", f"idle {_f(gw.get('rss_idle_mb'), ' MB')}, peak {_f(gw.get('rss_peak_mb'), ' MB')}, "
                        f"{_f(gw.get('rss_per_call_kb'), ' kB')}/call, after {_f(gw.get('rss_after_mb'), ' MB')}"),
    ]
    if emu:
        rows.append(("emulators CPU", f"{_f(emu['cpu_pct_load'], '%')} over the load, max {_f(emu['cpu_pct_max'], '%')}"))
    rows += [
        ("load generator", f"{lg['procs']} proc(s), CPU {', '.join(_f(x, '%') for x in lg['cpu_pct']) or '-'}; "
                           f"loop lag p99 {_f(lg['loop_lag_ms']['p99'])} ms; worst send lag p95 "
                           f"{_f(lg['max_send_lag_ms']['p95'])} ms; clock slip {lg['clock_slip_ms_total']} ms "
                           f"in {lg['calls_with_clock_slip']} call(s)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"voicegate bench{' — ' + r['label'] if r['label'] else ''}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if c["errors"]:
        lines.append("  failures:")
        lines += [f"    {n} x {msg}" for msg, n in sorted(c["errors"].items(), key=lambda kv: -kv[1])]
    if r["verdict"]["loadgen_limited"]:
        lines.append("  VERDICT: the load generator was the limit; these figures measure it, not the gateway:")
        lines += [f"    - {reason}" for reason in r["verdict"]["reasons"]]
    else:
        lines.append("  verdict: the load generator kept up (CPU, loop lag and send clock within bounds)")
    if r["verdict"]["contended"]:
        lines.append("  WARNING: " + "; ".join(r["verdict"]["contention"]))
    return "\n".join(lines)


def default_metrics_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/metrics"


def run(opts: BenchOptions) -> dict[str, Any]:
    """One benchmark run (spawning the stack if asked); the report dict."""
    if opts.spawn:
        with spawned_stack(opts) as stack:
            target = Target(stack.url, stack.metrics_url, stack.gateway_pid, stack.emulators_url, stack.emulators_pid,
                            stack.emulator_roles, stack.gateway_db)
            return _run_loop(bench(opts, target))
    target = Target(opts.url, opts.metrics_url or default_metrics_url(opts.url), opts.gateway_pid,
                    opts.emulators_url.rstrip("/"), None, gateway_db=opts.gateway_db)
    return _run_loop(bench(opts, target))


def write_json(path: str, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """0 if every call completed and the generator kept up; 1 if calls failed or it did not; 2 on bad usage."""
    try:
        opts = options_from_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"voicegate bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = run(opts)
    except RuntimeError as exc:  # the spawned stack did not come up
        print(f"voicegate bench: {exc}", file=sys.stderr)
        return 1
    if opts.json_path:
        write_json(opts.json_path, report)
    if not opts.quiet:
        print(format_report(report))
    return 0 if report["calls"]["failed"] == 0 and not report["verdict"]["loadgen_limited"] else 1


if __name__ == "__main__":
    sys.exit(main())
