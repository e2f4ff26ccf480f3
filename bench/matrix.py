"""voicegate at 1, 25, 50 and 100 concurrent calls on this machine, one gateway process.

    .venv/bin/python bench/matrix.py                        # writes bench/results/voicegate.{json,md}
    .venv/bin/python bench/matrix.py --levels 1,25 --out /tmp/m

Each level is one `voicegate bench --spawn` run: fresh emulators and a fresh gateway, the gateway
pinned to core `--gateway-cpu` (0), the load generator and the emulators to `--loadgen-cpu` (1),
emulated latencies fixed (STT final 150 ms after end of speech, LLM first token 300 ms at 50
tokens/s, TTS first byte 150 ms). Before each level it waits (up to `--wait-quiet-s`) for the machine
to be quiet, since other work on a shared 2-core machine would be measured too; a run that was
contended anyway is marked in the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, fmt, row_figures, wait_quiet  # noqa: E402

from loadgen import bench as B  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--levels", default="1,25,50,100", help="concurrent calls per run")
    p.add_argument("--calls", default="", help="calls per level, comma-separated (default: max(5, level))")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--wait-quiet-s", type=float, default=60.0)
    p.add_argument("--nice", type=int, default=-10,
                   help="nice value of every benchmark process (negative needs root): ahead of other work on a "
                        "shared machine (0: normal priority)")
    p.add_argument("--gateway-command", default="")
    p.add_argument("--out", default=str(RESULTS), help="directory for voicegate.json / voicegate.md")
    p.add_argument("--name", default="voicegate", help="file name stem")
    p.add_argument("--render", default="", metavar="JSON", help="only print the table of a saved run")
    return p.parse_args(argv)


def markdown(runs: list[dict]) -> str:
    lines = [
        "| calls | v2v p50 ms | v2v p95 ms | gateway hops p50 / p99 ms (wire) | test rig p50 / p99 ms "
        "| overhead p50 / p99 ms (caller) | barge-in→clear p50 ms | underruns (% frames) | failed "
        "| gateway CPU % of core | RSS MB idle→peak | RSS kB/call | note |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        f = row_figures(run["report"])
        notes = []
        if f.get("loadgen_limited"):
            notes.append("load generator was the limit")
        if f.get("contended"):
            notes.append("machine shared with other work")
        if run.get("error"):
            notes.append(run["error"])
        lines.append(
            f"| {run['level']} | {fmt(f.get('v2v_p50'))} | {fmt(f.get('v2v_p95'))} "
            f"| {fmt(f.get('overhead_wire_p50'), 1)} / {fmt(f.get('overhead_wire_p99'), 1)} "
            f"| {fmt(f.get('rig_p50'), 1)} / {fmt(f.get('rig_p99'), 1)} "
            f"| {fmt(f.get('overhead_caller_p50'))} / {fmt(f.get('overhead_caller_p99'))} "
            f"| {fmt(f.get('clear_p50'))} | {fmt(f.get('underruns'))} ({fmt(f.get('underrun_pct'), 2)}) "
            f"| {fmt(f.get('failed'))}/{fmt(f.get('placed'))} | {fmt(f.get('cpu_steady'), 1)} "
            f"| {fmt(f.get('rss_idle_mb'))}→{fmt(f.get('rss_peak_mb'))} | {fmt(f.get('rss_per_call_kb'))} "
            f"| {'; '.join(notes)} |")
    return "\n".join(lines)


def write_markdown(doc: dict, path: Path) -> str:
    pin = doc["pinning"]
    table = markdown(doc["runs"])
    path.write_text(
        f"# voicegate load matrix\n\n`{doc['command']}` at {doc['at']}; one gateway process pinned to core "
        f"{pin['gateway_cpu']}, load generator + emulators on core {pin['loadgen_and_emulators_cpu']}, nice "
        f"{pin.get('nice')}; emulated STT final 150 ms after end of speech, LLM first token 300 ms (then 50 tok/s), "
        f"TTS first byte 150 ms. Caller-side overhead = voice-to-voice minus 300 ms endpointing minus those "
        f"providers' share. Gateway hops (wire): the caller's frame that ends the turn -> Deepgram, STT final -> "
        f"LLM request, first-phrase token -> TTS text, TTS first audio -> caller, each timed between the two "
        f"processes that stamp those bytes (`loadgen/wire_hops.py`). Test rig: the emulators and the caller past "
        f"their configured times (timer lateness); gateway hops + test rig = caller-side overhead, turn by turn."
        f"\n\n{table}\n")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:  # re-write the markdown of a saved run (after a change to the table)
        doc = json.loads(Path(args.render).read_text())
        print(write_markdown(doc, Path(args.render).with_suffix(".md")))
        return 0
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    calls = [int(x) for x in args.calls.split(",")] if args.calls else [max(5, c) for c in levels]
    runs = []
    for level, n in zip(levels, calls):
        print(f"== {level} concurrent calls ({n} in total)", flush=True)
        quiet = wait_quiet(args.wait_quiet_s)
        opts = B.BenchOptions(spawn=True, concurrency=level, calls=n, turns=args.turns, procs=args.procs,
                              gateway_cpu=args.gateway_cpu, loadgen_cpu=args.loadgen_cpu,
                              emulators_cpu=args.loadgen_cpu, gateway_command=args.gateway_command, nice=args.nice,
                              label=f"voicegate {level} calls")
        try:
            report = B.run(opts)
            print(B.format_report(report), flush=True)
            runs.append({"level": level, "calls": n, "quiet_before": quiet, "report": report})
        except Exception as exc:  # one level failing (e.g. the stack did not come up) is recorded, not fatal
            print(f"  level {level} failed: {exc}", flush=True)
            runs.append({"level": level, "calls": n, "quiet_before": quiet, "report": None,
                         "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"tool": "bench/matrix.py", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": " ".join([".venv/bin/python", "bench/matrix.py", *(sys.argv[1:] if argv is None else argv)]),
           "pinning": {"gateway_cpu": args.gateway_cpu, "loadgen_and_emulators_cpu": args.loadgen_cpu,
                       "nice": args.nice},
           "runs": runs}
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(write_markdown(doc, out / f"{args.name}.md"))
    return 0 if all(r["report"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
