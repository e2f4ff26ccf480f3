"""Profile the gateway under load with py-spy: where does its CPU go, per frame and per turn?

    .venv/bin/pip install py-spy                     # a profiling tool, not a voicegate dependency
    .venv/bin/python bench/profile.py                # 50 calls; writes bench/results/profile-50.{txt,json}
    .venv/bin/python bench/profile.py --calls 25 --rate 250

The gateway runs as `py-spy record --format raw -- python -m gateway serve`, pinned like the
matrix (gateway core 0; py-spy, the emulators and the load generator core 1), under the same
`loadgen.bench` load as `voicegate bench --spawn`. When the load is done the gateway is stopped and
py-spy writes its collapsed stacks (one line per distinct stack, with its sample count; idle
threads are not sampled). `--gil` samples only the thread holding the GIL: Python's own CPU work,
not threads parked on a queue or uvloop waiting in epoll (py-spy's idle detection does not see
those on this machine). Stacks from start-up (imports, engine loading) are dropped; each remaining
sample is attributed twice, walking its stack from the leaf up: to an operation (JSON, base64,
codec, VAD, WebSocket framing, SDK model parsing, asyncio plumbing...) and to the part of voicegate
it worked for (inbound frame, outbound writer, STT forwarding, TTS / LLM clients...). The
functions with the most self time are listed with file:function:line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, ROOT, wait_quiet  # noqa: E402

from loadgen import bench as B  # noqa: E402

# What a sample was doing: the first marker met walking its stack from the leaf up (so a frame write
# inside the Deepgram client counts as "provider WebSocket", not as Deepgram's own logic, and the
# middleware that wraps every request never captures the whole stack).
OPERATIONS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON parse / serialize", ("orjson", "json/")),
    ("base64", ("base64.py", "b64encode", "b64decode")),
    ("mu-law codec", ("audio/mulaw.py",)),
    ("resampling", ("audio/resample.py", "soxr")),
    ("VAD / ring buffer", ("audio/vad.py", "audio/ring_buffer.py")),
    ("outbound pacer / framing", ("audio/framing.py",)),
    ("Twilio protocol (parse / build)", ("gateway/twilio_protocol.py",)),
    ("WebSocket to Twilio (uvicorn, sans-io)", ("uvicorn/protocols/websockets",)),
    ("WebSocket client to providers (websockets lib)", ("websockets/", "permessage_deflate", "randbytes")),
    ("SDK models (pydantic, typing introspection)", ("pydantic", "typing.py", "/core/unchecked_base_model",
                                                     "/core/pydantic_utilities")),
    ("HTTP client (openai SDK, httpx2)", ("httpx2", "httpcore", "h11", "openai/", "anyio")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("logging", ("logging/", "gateway/logs.py")),
    ("sqlite store", ("sqlite3", "dialog/store.py")),
    ("asyncio plumbing (tasks, queues, events, timers)", ("asyncio/",)),
    ("call core (gateway/session.py)", ("gateway/session.py",)),
    ("media loop (gateway/call.py)", ("gateway/call.py",)),
    ("Deepgram client code", ("providers/deepgram_stt.py", "deepgram/")),
    ("ElevenLabs client code", ("providers/elevenlabs_tts.py", "elevenlabs/")),
    ("OpenAI client code", ("providers/openai_llm.py",)),
    ("dialog / responder", ("dialog/",)),
    ("other gateway code", ("gateway/", "providers/", "audio/")),
    ("starlette / uvicorn", ("starlette/", "uvicorn/")),
]
# Which part of voicegate the sample was working for: its innermost voicegate frame.
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("per frame: inbound media (call.py _on_message / session audio)", ("_on_message", "AudioReceived",
                                                                         "_on_audio")),
    ("per frame: outbound writer (call.py _writer)", ("MediaCall._writer",)),
    ("per frame: STT audio forwarding (providers/deepgram_stt.py)", ("providers/deepgram_stt.py",)),
    ("per turn: TTS client (providers/elevenlabs_tts.py)", ("providers/elevenlabs_tts.py",)),
    ("per turn: LLM client (providers/openai_llm.py)", ("providers/openai_llm.py",)),
    ("per turn: dialog", ("dialog/",)),
    ("call timers / core (session.py)", ("gateway/session.py", "MediaCall._on_timer")),
    ("other voicegate code", ("gateway/", "providers/", "audio/")),
]
STARTUP = ("_find_and_load", "Engines.load", "prerender", "lifespan")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--calls", type=int, default=50, help="concurrent calls")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--wait-quiet-s", type=float, default=60.0)
    p.add_argument("--nice", type=int, default=-10,
                   help="nice value of every benchmark process (negative needs root): ahead of other work on a "
                        "shared machine (0: normal priority)")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def classify(frames: list[str], table: list[tuple[str, tuple[str, ...]]]) -> str:
    for frame in reversed(frames):  # leaf first
        for name, markers in table:
            if any(m in frame for m in markers):
                return name
    return "unattributed (C code called from the event loop)"


def summarize(raw: str) -> dict:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total_all = sum(n for _, n in stacks)
    ops: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    startup = 0
    for frames, n in stacks:
        if any(m in f for f in frames for m in STARTUP):
            startup += n
            continue
        ops[classify(frames, OPERATIONS)] += n
        owners[classify(frames, OWNERS)] += n
        selfs[frames[-1]] += n
    total = total_all - startup
    pct = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total_all, "samples_after_startup": total,
        "operations": [{"operation": c, "samples": n, "pct": pct(n)} for c, n in ops.most_common()],
        "owners": [{"owner": c, "samples": n, "pct": pct(n)} for c, n in owners.most_common()],
        "top_self": [{"frame": f, "samples": n, "pct": pct(n)} for f, n in selfs.most_common(50)],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("profile.py: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / f"profile-{args.calls}.txt"
    print(f"profiling the gateway at {args.calls} calls", flush=True)
    quiet = wait_quiet(args.wait_quiet_s)
    opts = B.BenchOptions(spawn=True, concurrency=args.calls, calls=args.calls, gateway_cpu=args.gateway_cpu,
                          loadgen_cpu=args.loadgen_cpu, emulators_cpu=args.loadgen_cpu, nice=args.nice,
                          label=f"profile {args.calls} calls")
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-profile-"))
    emu = spy = None
    try:
        emu, emulators_url, _ = B.start_emulators(opts, tmp)
        port = B.free_port()
        log = tmp / "gateway.log"
        gateway_cmd = B.pinned_command([sys.executable, "-m", "gateway", "serve"], args.gateway_cpu, args.nice)
        cmd = B.pinned_command([py_spy, "record", "--gil", "--rate", str(args.rate), "--format", "raw",
                                "--output", str(raw_path), "--", *gateway_cmd], args.loadgen_cpu, args.nice)
        with log.open("wb") as f:
            spy = subprocess.Popen(cmd, cwd=ROOT, env=B.gateway_env(port, tmp, opts, emulators_url),
                                   stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        B.wait_http(f"http://127.0.0.1:{port}/readyz", spy, B.READY_TIMEOUT_S, log)
        import psutil

        children = psutil.Process(spy.pid).children(recursive=True)
        gateway = next(c for c in children if "gateway" in " ".join(c.cmdline()))
        target = B.Target(url=f"ws://127.0.0.1:{port}/twilio/media", metrics_url=f"http://127.0.0.1:{port}/metrics",
                          gateway_pid=gateway.pid, emulators_url=emulators_url, emulators_pid=emu.pid)
        opts.spawn = False  # the stack is ours; bench() must not re-pin the gateway
        t0 = time.monotonic()
        report = B._run_loop(B.bench(opts, target))
        elapsed = time.monotonic() - t0
        print(B.format_report(report), flush=True)
        gateway.send_signal(signal.SIGTERM)  # py-spy writes its file when its child exits
        spy.wait(60)
    finally:
        for proc in (spy, emu):
            if proc is not None:
                B.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(raw_path.read_text())
    summary.update({"calls": args.calls, "rate": args.rate, "load_seconds": round(elapsed, 1), "quiet_before": quiet,
                    "command": " ".join(cmd), "raw": str(raw_path.relative_to(ROOT) if raw_path.is_relative_to(ROOT) else raw_path),
                    "bench": {k: report[k] for k in ("calls", "voice_to_voice_ms", "overhead_caller_ms",
                                                     "overhead_gateway_ms", "gateway", "verdict")}})
    (out / f"profile-{args.calls}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{summary['samples_after_startup']} samples after start-up ({args.rate}/s)")
    print("by operation (innermost recognisable frame):")
    for c in summary["operations"]:
        print(f"  {c['pct']:5.1f}%  {c['operation']}")
    print("by owner (innermost voicegate frame):")
    for c in summary["owners"]:
        print(f"  {c['pct']:5.1f}%  {c['owner']}")
    print("top self time:")
    for row in summary["top_self"][:25]:
        print(f"  {row['pct']:5.1f}%  {row['frame']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
