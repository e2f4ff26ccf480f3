"""The realistic turn-taking benchmark (issue 20, item 1): real recordings in real-time calls.

Starts the gateway on the offline default (whisper + rules + Piper) from a source tree, on a free port with
its own database, runs a bounded set of simulated calls a few at a time (`loadgen/turn_taking.py` says what
each scenario plays, `loadgen/turn_taking_verdicts.py` how it is judged), stops the gateway, and writes the results:

    .venv/bin/python bench/turn_taking.py                                  # this checkout, label "main"
    git worktree add /work/before f80c441
    nice -n 5 .venv/bin/python bench/turn_taking.py --gateway-src /work/before --label before
    .venv/bin/python bench/turn_taking.py --quick --scenarios nonspeech,pause   # a smoke run

Each run is stored under its label in `--json` (other labels' runs are kept), and `--md` is rendered from
every run in it: one table, a column per run. Only the wire and `GET /api/calls/{call_sid}` are used, so an
older gateway is measured the same way. The recordings are fetched (pinned Debian packages) on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen import turn_taking as tt  # noqa: E402
from loadgen import turn_taking_verdicts as verdicts  # noqa: E402
from loadgen.recordings import fetch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway-src", type=Path, default=ROOT,
                   help="run `python -m gateway serve` from this source tree (default: this checkout)")
    p.add_argument("--url", default="", help="measure a gateway already running at this http://host:port instead")
    p.add_argument("--label", default="", help="the run's name in the results (default: main, or the tree's name)")
    p.add_argument("-c", "--concurrency", type=int, default=3,
                   help="calls at a time (default: %(default)s; whisper is CPU-heavy on a 2-core box)")
    p.add_argument("--scenarios", default=",".join(tt.SCENARIOS), help="comma-separated (default: all)")
    p.add_argument("--quick", action="store_true", help="a few probes of each scenario (a smoke run)")
    p.add_argument("--seed", type=int, default=20, help="the order the probes run in")
    p.add_argument("--no-warmup", action="store_true", help="skip the unmeasured first call")
    p.add_argument("--json", default=str(ROOT / "bench/results/turn_taking.json"))
    p.add_argument("--md", default=str(ROOT / "bench/results/turn_taking.md"))
    p.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the spawned gateway (repeatable)")
    return p.parse_args(argv)


def progress(done: int, total: int, result: dict) -> None:
    brief = {k: result.get(k) for k in ("clear", "lost", "premature", "detected", "phantom_turns", "self_clears", "wer")
             if k in result}
    err = f" ERROR {result['error']}" if result.get("error") else ""
    print(f"[{done}/{total}] {result['scenario']:<11} {result['label'][:60]:<60} {brief}{err}", file=sys.stderr,
          flush=True)


async def measure(gateway: tt.Gateway, args: argparse.Namespace) -> tuple[list[dict], list[tt.Probe]]:
    cat = fetch()
    sizes = tt.Sizes.quick() if args.quick else tt.Sizes()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    probes = tt.build_probes(cat, sizes, scenarios, seed=args.seed)
    print(f"{len(probes)} calls: {tt.probe_plan(probes)}, {args.concurrency} at a time", file=sys.stderr, flush=True)
    if not args.no_warmup:
        await tt.warm_up(gateway, cat)
    return await tt.run_probes(gateway, probes, args.concurrency, progress), probes


def load_runs(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data.get("runs"), dict) else {"runs": {}}
    except (FileNotFoundError, ValueError):
        return {"runs": {}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src = args.gateway_src.resolve()
    label = args.label or ("main" if src == ROOT else src.name)
    version = tt.code_version(src)
    started = time.time()
    load_start = os.getloadavg()[0]
    env = dict(item.split("=", 1) for item in args.gateway_env)
    if args.url:
        base = args.url.rstrip("/")
        gateway = tt.Gateway(base, "ws" + base[len("http"):] + "/twilio/media")
        results, probes = asyncio.run(measure(gateway, args))
    else:
        with tt.spawn_gateway(src, env) as gateway:
            results, probes = asyncio.run(measure(gateway, args))
        print(f"gateway log: {gateway.log}", file=sys.stderr)
    summary = verdicts.summarize(results)
    run = {
        "label": label, "version": version,
        "started_utc": dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.time() - started, 1), "concurrency": args.concurrency,
        # The machine is shared: the 1-minute load average (2 cores) when the run started and ended.
        "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "command": shlex.join(["nice", "-n", str(os.nice(0))] if os.nice(0) else []) + (" " if os.nice(0) else "")
                   + shlex.join([Path(sys.executable).name, "bench/turn_taking.py", *(argv or sys.argv[1:])]),
        "quick": args.quick, "plan": tt.probe_plan(probes), "summary": summary, "calls": results,
    }
    out = Path(args.json)
    data = load_runs(out)
    data["runs"][label] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    md = verdicts.markdown(list(data["runs"].values()))
    Path(args.md).write_text(md)
    print(verdicts.markdown([run]))
    return 0 if summary["failed_calls"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
