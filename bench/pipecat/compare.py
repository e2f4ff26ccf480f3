"""voicegate and Pipecat side by side: same emulators, same simulated calls, same pinning.

    bash bench/pipecat/setup.sh                                   # once: Pipecat's own venv
    .venv/bin/python bench/pipecat/compare.py                     # 1, 25, 50, 100 calls
    .venv/bin/python bench/pipecat/compare.py --levels 1,25 --systems pipecat

For each load level and each system: fresh emulators pinned to `--loadgen-cpu`, a fresh server
pinned to `--gateway-cpu` (voicegate: `python -m gateway serve`; Pipecat: bench/pipecat/server.py in
bench/pipecat/.venv), then the same `loadgen.bench` run against it: the same caller audio and
script (greeting, 3 utterances, the second a barge-in 500 ms into the reply), the same emulated
latencies, the same sampling of the server's CPU and RSS. Pipecat gets levels above the first one
it fails at (more than half its calls failed, or its server died) recorded as skipped, not run.

The caller-side overhead subtracts each system's own end-of-speech wait: voicegate's is the 300 ms
Deepgram endpointing it asks for; Pipecat's is its Silero VAD `stop_secs` (0.2 s), after which it
sends Finalize (or 300 ms endpointing, whichever comes first: the emulator honours both), so the
STT share (150 ms) is the same for both. Pipecat's Smart Turn v3 inference after VAD stop is
counted as Pipecat's own time, since it is part of its pipeline.

Writes bench/results/compare.json and bench/results/compare.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchlib import RESULTS, fmt, row_figures, wait_quiet  # noqa: E402

from loadgen import bench as B  # noqa: E402

PIPECAT_PYTHON = HERE / ".venv" / "bin" / "python"
PIPECAT_EOS_WAIT_MS = 200.0  # pipecat.audio.vad.vad_analyzer.VAD_STOP_SECS
SURVIVAL_FAILED_SHARE = 0.5  # more failed calls than this at a level: Pipecat did not survive it
METRICS = (  # (key, label, digits, lower is better)
    ("v2v_p50", "voice-to-voice p50 ms", 0),
    ("v2v_p95", "voice-to-voice p95 ms", 0),
    # The off-script conversation's turns by kind of caller line (no rows for the booking one).
    ("v2v_answer_p50", "voice-to-voice p50 ms, off-script answers", 0),
    ("v2v_tool_p50", "voice-to-voice p50 ms, details recorded (voicegate: a tool call)", 0),
    ("v2v_script_p50", "voice-to-voice p50 ms, lines the rules understand", 0),
    ("overhead_caller_p50", "overhead p50 ms (caller side)", 0),
    ("overhead_caller_p99", "overhead p99 ms (caller side)", 0),
    ("overhead_wire_p50", "hops inside the server p50 ms (wire-timed)", 1),
    ("overhead_wire_p99", "hops inside the server p99 ms (wire-timed)", 1),
    ("clear_p50", "barge-in → clear p50 ms", 0),
    ("underrun_pct", "underruns % of reply frames", 2),
    ("underrun_time_pct", "underrun gaps % of reply time", 2),
    ("reply_timeouts", "turns without a reply", 0),
    ("failed", "failed calls", 0),
    ("cpu_steady", "server CPU % of a core (all calls up)", 1),
    ("rss_idle_mb", "server RSS idle MB", 0),
    ("rss_peak_mb", "server RSS peak MB", 0),
    ("rss_per_call_kb", "RSS kB per call", 0),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--levels", default="1,25,50,100")
    p.add_argument("--systems", default="voicegate,pipecat")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--conversation", choices=tuple(B.conversations.CONVERSATIONS), default="booking",
                   help="what the callers say (loadgen/conversations.py): the off-script one has the emulated "
                        "model answer or record details per line, for both systems alike")
    p.add_argument("--turns", type=int, default=0, help="caller utterances per call (0: the conversation's default)")
    p.add_argument("--wait-quiet-s", type=float, default=60.0)
    p.add_argument("--nice", type=int, default=-10,
                   help="nice value of every benchmark process (negative needs root): ahead of other work on a "
                        "shared machine (0: normal priority)")
    p.add_argument("--max-call-s", type=float, default=90.0)
    p.add_argument("--gateway-command", default="", help="voicegate's server command (default: python -m gateway serve)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--render", default="", metavar="JSON", help="only re-write the table of a saved compare.json")
    p.add_argument("--name", default="compare", help="file name stem of the outputs")
    p.add_argument("--voicegate-from", default="", metavar="JSON",
                   help="with --render: take voicegate's figures from a bench/matrix.py run (same options and "
                        "pinning) instead of the ones in the compare file, and save the merged file")
    return p.parse_args(argv)


def options(args: argparse.Namespace, level: int, system: str) -> B.BenchOptions:
    return B.BenchOptions(concurrency=level, calls=max(5, level), conversation=args.conversation, turns=args.turns,
                          max_call_s=args.max_call_s,
                          gateway_cpu=args.gateway_cpu, loadgen_cpu=args.loadgen_cpu, emulators_cpu=args.loadgen_cpu,
                          gateway_command=args.gateway_command, nice=args.nice, label=f"{system} {level} calls")


def run_voicegate(args: argparse.Namespace, level: int) -> dict:
    opts = options(args, level, "voicegate")
    opts.spawn = True
    return B.run(opts)


def run_pipecat(args: argparse.Namespace, level: int) -> dict:
    opts = options(args, level, "pipecat")
    opts.eos_wait_ms = PIPECAT_EOS_WAIT_MS
    opts.first_phrase_rule = "sentence"  # Pipecat's TTS aggregates whole sentences
    tmp = Path(tempfile.mkdtemp(prefix="pipecat-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        emu, emulators_url, _ = B.start_emulators(opts, tmp)
        procs.append(emu)
        port = B.free_port()
        log = tmp / "pipecat.log"
        with log.open("wb") as f:
            server = subprocess.Popen(
                B.pinned_command([str(PIPECAT_PYTHON), str(HERE / "server.py"), "--port", str(port),
                                  "--emulators", emulators_url], args.gateway_cpu, args.nice),
                cwd=HERE, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(server)
        B.wait_http(f"http://127.0.0.1:{port}/healthz", server, B.READY_TIMEOUT_S, log)
        target = B.Target(url=f"ws://127.0.0.1:{port}/ws", metrics_url="", gateway_pid=server.pid,
                          emulators_url=emulators_url, emulators_pid=emu.pid)
        report = B._run_loop(B.bench(opts, target))
        report["server_alive_after"] = server.poll() is None
        text = log.read_text(errors="replace")
        report["server_log_errors"] = sum(1 for line in text.splitlines() if "| ERROR" in line)
        report["server_log_tail"] = text[-2000:]
        return report
    finally:
        for proc in reversed(procs):
            B.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


BY_LINE_KIND = {"v2v_answer_p50", "v2v_tool_p50", "v2v_script_p50"}
COLLAPSE_HIDDEN = BY_LINE_KIND | {"v2v_p50", "v2v_p95", "overhead_caller_p50", "overhead_caller_p99", "overhead_wire_p50",
                   "overhead_wire_p99", "clear_p50", "underrun_pct",
                   "underrun_time_pct"}


def collapsed(figures: dict) -> bool:
    return bool(figures) and figures["failed"] > SURVIVAL_FAILED_SHARE * max(1, figures["placed"])


def ratio(p, v) -> str:
    if p is None or v is None or v == 0:
        return "–"
    return f"{p / v:.2f}×"


def sentence_rule(report: dict | None) -> dict | None:
    """A Pipecat report made before the caller-side overhead knew Pipecat's first-phrase rule: shift
    its overhead figures by the difference (a constant per run, so every percentile moves by it)."""
    oc = (report or {}).get("overhead_caller_ms")
    if not oc or oc.get("first_phrase_rule"):
        return report
    cfg = report["config"]
    reply = B.LLM_REPLY_TEMPLATE.format(n=1) if cfg.get("unique_replies", True) else cfg["llm_reply"]
    share = B.provider_share_ms(cfg["stt_final_delay"], cfg["llm_first_token"], cfg["llm_token_rate"],
                                cfg["tts_first_byte"], reply, "sentence")
    delta = share["llm_first_phrase_ms"] - oc["llm_first_phrase_ms"]
    fixed = {k: (None if oc.get(k) is None else round(oc[k] - delta, 1)) for k in ("p50", "p95", "p99", "mean", "max")}
    return {**report, "overhead_caller_ms": {**oc, **fixed, "llm_first_phrase_ms": share["llm_first_phrase_ms"],
                                             "subtracted_ms": oc["subtracted_ms"] + delta,
                                             "first_phrase_rule": "sentence (applied afterwards)"}}


def markdown(levels: list[int], results: dict[str, dict[int, dict]]) -> str:
    lines = ["| calls | metric | voicegate | Pipecat | Pipecat ÷ voicegate |", "|---:|---|---:|---:|---:|"]
    for level in levels:
        v_run = results.get("voicegate", {}).get(level) or {}
        p_run = results.get("pipecat", {}).get(level) or {}
        v, p = row_figures(v_run.get("report")), row_figures(sentence_rule(p_run.get("report")))
        for key, label, digits in METRICS:
            if key in BY_LINE_KIND and "v2v_answer_p50" not in (p or {}) and "v2v_answer_p50" not in (v or {}):
                continue  # not the off-script conversation: the overall rows say it all
            pv = p.get(key) if p else None
            vv = v.get(key) if v else None
            p_text = fmt(pv, digits) if p else (p_run.get("status") or "not run")
            v_text = fmt(vv, digits) if v else (v_run.get("status") or "not run")
            # A system whose calls mostly failed has no meaningful latency: its "replies" are stray
            # audio (a greeting arriving late), so those cells say it collapsed instead of a number.
            if key in COLLAPSE_HIDDEN:
                if collapsed(p):
                    p_text, pv = f"collapsed ({p['failed']}/{p['placed']} failed)", None
                if collapsed(v):
                    v_text, vv = f"collapsed ({v['failed']}/{v['placed']} failed)", None
            lines.append(f"| {level} | {label} | {v_text} | {p_text} | {ratio(pv, vv)} |")
        notes = []
        for name, run in (("voicegate", v_run), ("Pipecat", p_run)):
            f = row_figures(run.get("report"))
            if f.get("loadgen_limited"):
                notes.append(f"{name}: load generator was the limit")
            if f.get("contended"):
                notes.append(f"{name}: machine shared with other work")
            if run.get("error"):
                notes.append(f"{name}: {run['error']}")
        if notes:
            lines.append(f"| {level} | note | {'; '.join(notes)} | | |")
    return "\n".join(lines)


def write_markdown(doc: dict, levels: list[int], results: dict[str, dict[int, dict]], path: Path) -> str:
    pin = doc["pinning"]
    table = markdown(levels, results)
    source = ""
    if doc.get("voicegate_from"):
        vf = doc["voicegate_from"]
        source = (f" voicegate's column comes from `{vf['command']}` at {vf['at']} (same calls, options and "
                  f"pinning; Pipecat does not depend on voicegate's code, voicegate's code moved meanwhile).")
    path.write_text(
        f"# voicegate vs Pipecat 1.14.0\n\n`{doc['command']}` at {doc['at']}. Same emulators (STT final 150 ms, "
        f"LLM first token 300 ms at 50 tok/s, TTS first byte 150 ms), same simulated calls, server pinned to core "
        f"{pin['server_cpu']}, load generator + emulators on core {pin['loadgen_and_emulators_cpu']}, nice "
        f"{pin.get('nice')}. Ratios above 1 mean Pipecat needs more (time, CPU, memory) than voicegate. "
        f"Caller-side overhead subtracts each system's own end-of-speech wait (voicegate: 300 ms Deepgram "
        f"endpointing; Pipecat: 200 ms Silero VAD stop_secs) and the providers' configured share "
        f"(first phrase: voicegate's chunker; Pipecat: a whole sentence).{source}\n\n{table}\n")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:  # re-write the markdown of a saved run
        doc = json.loads(Path(args.render).read_text())
        if args.voicegate_from:
            matrix = json.loads(Path(args.voicegate_from).read_text())
            doc["results"]["voicegate"] = {str(run["level"]): {"report": run["report"], "from": args.voicegate_from,
                                                               "quiet_before": run.get("quiet_before")}
                                           for run in matrix["runs"]}
            doc["voicegate_from"] = {"file": args.voicegate_from, "command": matrix["command"], "at": matrix["at"]}
            Path(args.render).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        results = {s: {int(k): v for k, v in r.items()} for s, r in doc["results"].items()}
        levels = sorted({level for r in results.values() for level in r})
        print(write_markdown(doc, levels, results, Path(args.render).with_suffix(".md")))
        return 0
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if "pipecat" in systems and not PIPECAT_PYTHON.exists():
        print("compare.py: bench/pipecat/.venv is missing: run `bash bench/pipecat/setup.sh` first", file=sys.stderr)
        return 2
    results: dict[str, dict[int, dict]] = {s: {} for s in systems}
    pipecat_gave_up_at: int | None = None
    for level in levels:
        for system in systems:
            if system == "pipecat" and pipecat_gave_up_at is not None:
                results[system][level] = {"report": None, "status": f"skipped (failed at {pipecat_gave_up_at})"}
                continue
            print(f"== {system}, {level} concurrent calls", flush=True)
            quiet = wait_quiet(args.wait_quiet_s)
            try:
                report = run_voicegate(args, level) if system == "voicegate" else run_pipecat(args, level)
                print(B.format_report(report), flush=True)
                results[system][level] = {"report": report, "quiet_before": quiet}
                failed_share = report["calls"]["failed"] / max(1, report["calls"]["placed"])
                if system == "pipecat" and (failed_share > SURVIVAL_FAILED_SHARE
                                            or not report.get("server_alive_after", True)):
                    pipecat_gave_up_at = level
            except Exception as exc:  # record the failure, keep comparing
                print(f"  {system} at {level} failed: {type(exc).__name__}: {exc}", flush=True)
                results[system][level] = {"report": None, "quiet_before": quiet, "status": "failed",
                                          "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                if system == "pipecat":
                    pipecat_gave_up_at = level
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python", "bench/pipecat/compare.py", *(sys.argv[1:] if argv is None else argv)])
    doc = {"tool": "bench/pipecat/compare.py", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
           "pinning": {"server_cpu": args.gateway_cpu, "loadgen_and_emulators_cpu": args.loadgen_cpu,
                       "nice": args.nice},
           "pipecat": {"version": "1.14.0", "python": str(PIPECAT_PYTHON), "eos_wait_ms": PIPECAT_EOS_WAIT_MS},
           "results": {s: {str(k): v for k, v in r.items()} for s, r in results.items()}}
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(write_markdown(doc, levels, results, out / f"{args.name}.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
