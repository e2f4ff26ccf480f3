"""Profile the gateway under load with py-spy: where does its CPU go, per frame and per turn?

    .venv/bin/pip install py-spy                     # a profiling tool, not a voicegate dependency
    .venv/bin/python bench/profile.py                # 50 calls; writes bench/results/profile-50.{txt,json}
    .venv/bin/python bench/profile.py --calls 25 --rate 250

The gateway runs as `py-spy record --format raw -- python -m gateway serve`, pinned like the
matrix (gateway core 0; py-spy, the emulators and the load generator core 1), under the same
`gateway.bench` load as `voicegate bench --spawn`. When the load is done the gateway is stopped and
py-spy writes its collapsed stacks (one line per distinct stack, with its sample count; idle
threads are not sampled). Stacks from start-up (imports) are dropped; the rest are summarised:
each stack is put in the first category whose marker it contains (the per-frame path: JSON parse,
base64, codec, VAD, send...; the per-turn path: STT, LLM, TTS clients...), and the functions with
the most self time are listed with file:function.
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

from gateway import bench as B  # noqa: E402

# (category, markers): a stack belongs to the first category one of whose markers is in it. Order
# matters: the narrowest, per-frame work first, then the per-turn clients, then the plumbing.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("startup (dropped)", ("_find_and_load", "Engines.load", "prerender")),
    ("frame: JSON parse (twilio_protocol.parse)", ("twilio_protocol.py", "orjson")),
    ("frame: base64", ("b64decode", "b64encode", "base64.py")),
    ("frame: mu-law codec / resample", ("audio/mulaw.py", "audio/resample.py", "mulaw.py")),
    ("frame: VAD / ring buffer", ("audio/vad.py", "audio/ring_buffer.py", "vad.py", "ring_buffer.py")),
    ("frame: outbound pacer / framing", ("audio/framing.py", "framing.py")),
    ("frame: call core (session.py)", ("gateway/session.py", "session.py")),
    ("turn: Deepgram client (STT)", ("deepgram_stt.py", "/deepgram/")),
    ("turn: OpenAI client (LLM)", ("openai_llm.py", "/openai/", "httpx2", "httpcore", "h11")),
    ("turn: ElevenLabs client (TTS)", ("elevenlabs_tts.py", "/elevenlabs/")),
    ("turn: dialog / responder", ("dialog/",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("logging", ("logging/", "gateway/logs.py", "logs.py")),
    ("transcript store (sqlite)", ("store.py", "sqlite3")),
    ("dashboard feed", ("dashboard.py",)),
    ("socket send (websocket write)", ("send_text", "websockets_sansio_impl.py:send", "write", "sendall")),
    ("socket receive (websocket read/parse)", ("websockets_sansio_impl.py", "/websockets/", "data_received",
                                               "websockets_impl.py", "wsproto")),
    ("media loop glue (call.py)", ("gateway/call.py", "call.py")),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]


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


def categorize(stack: str) -> str:
    for name, markers in CATEGORIES:
        if any(m in stack for m in markers):
            return name
    return "other"


def summarize(raw: str) -> dict:
    stacks: list[tuple[str, int]] = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack, int(count)))
    total_all = sum(n for _, n in stacks)
    cats: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in stacks:
        cat = categorize(stack)
        cats[cat] += n
        if cat == "startup (dropped)":
            continue
        frames = stack.split(";")
        selfs[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    total = total_all - cats["startup (dropped)"]
    pct = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total_all, "samples_after_startup": total,
        "categories": [{"category": c, "samples": n, "pct": pct(n)}
                       for c, n in cats.most_common() if c != "startup (dropped)"],
        "top_self": [{"frame": f, "samples": n, "pct": pct(n)} for f, n in selfs.most_common(40)],
        "top_inclusive": [{"frame": f, "samples": n, "pct": pct(n)} for f, n in inclusive.most_common(60)],
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
        cmd = B.pinned_command([py_spy, "record", "--rate", str(args.rate), "--format", "raw",
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
                    "command": " ".join(cmd), "raw": str(raw_path.relative_to(ROOT)),
                    "bench": {k: report[k] for k in ("calls", "voice_to_voice_ms", "overhead_caller_ms",
                                                     "overhead_gateway_ms", "gateway", "verdict")}})
    (out / f"profile-{args.calls}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{summary['samples_after_startup']} samples after start-up ({args.rate}/s)")
    for c in summary["categories"]:
        print(f"  {c['pct']:5.1f}%  {c['category']}")
    print("top self time:")
    for row in summary["top_self"][:25]:
        print(f"  {row['pct']:5.1f}%  {row['frame']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
