"""Leak run: thousands of short sequential calls against ONE gateway; does its memory stay flat?

    .venv/bin/python bench/leak.py                       # 2,000 calls, emulators + gateway spawned here
    .venv/bin/python bench/leak.py --calls 300 --json bench/results/leak.json
    .venv/bin/python bench/leak.py --url ws://127.0.0.1:8000/twilio/media --gateway-pid 1234

Each call is short (~2-3 s): connect, `start`, one short utterance spoken at once (over the
greeting, so the barge-in path runs too), the agent's short reply, `stop`. At most
`--concurrency` calls are up at a time. The gateway's RSS, open file descriptors, threads and
TCP connections are sampled (psutil, from outside: nothing is added to the gateway) after the
warm-up calls and then every `--sample-every` calls.

It reports RSS growth from the post-warm-up baseline to the end and over the second half of the
calls (RSS climbs for the first few hundred calls while malloc arenas and pools fill, then must stay
flat: a leak keeps climbing), least-squares slopes in kB per 100 calls, and whether the descriptors
/ threads / sockets / active-call gauge came back to their baseline once the calls were over. Exit 0
when both growths are under their bounds and everything came back, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen import bench as B  # noqa: E402
from loadgen.simcaller import CallerTurn, run_call  # noqa: E402

UTTERANCE = "Yes, that is right."
REPLY = "Okay, noted."  # the emulated LLM's reply: short, so a call is a second or two of audio
# Resources may sit a little above the baseline after the calls: keep-alive connections to the
# providers' hosts (one per host and pool), a thread pool grown to its cap.
FD_SLACK = 8
THREAD_SLACK = 4
SETTLE_S = 15.0  # how long the gateway gets to close the last calls' provider sockets


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--calls", type=int, default=2000, help="measured calls (after the warm-up)")
    p.add_argument("--warmup", type=int, default=50, help="calls before the baseline (pools, caches, lazy imports)")
    p.add_argument("--concurrency", type=int, default=8, help="calls up at once (a few)")
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--max-growth-mb", type=float, default=40.0,
                   help="bound on RSS growth from the baseline to the end (allocator warm-up included)")
    p.add_argument("--max-late-growth-mb", type=float, default=5.0,
                   help="bound on RSS growth over the second half of the calls, where warm-up is over "
                        "(5 MB over 1,000 calls = 5 kB a call); 0 = not checked")
    p.add_argument("--max-call-s", type=float, default=20.0)
    p.add_argument("--url", default="", help="a running gateway's media URL (default: spawn one)")
    p.add_argument("--gateway-pid", type=int, default=None)
    p.add_argument("--metrics-url", default="")
    p.add_argument("--gateway-cpu", type=int, default=None)
    p.add_argument("--loadgen-cpu", type=int, default=None)
    p.add_argument("--gateway-command", default="")
    p.add_argument("--voice", choices=("piper", "synthetic"), default="synthetic")
    p.add_argument("--json", dest="json_path", default="")
    return p.parse_args(argv)


def _resources(sampler: B.Sampler) -> dict[str, int] | None:
    return sampler.snapshot("gateway")


def _active_calls(metrics_url: str) -> float | None:
    text = B.scrape(metrics_url)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("voicegate_active_calls "):
            return float(line.split()[1])
    return None


def _slope_kb_per_100(points: list[tuple[int, int]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 100 / 1024


async def leak_run(args: argparse.Namespace, url: str, pid: int, metrics_url: str) -> dict:
    audio = await asyncio.to_thread(B.render_utterances, [UTTERANCE], args.voice)
    turns = [CallerTurn(text=UTTERANCE, audio=audio[UTTERANCE], gap_ms=0)]
    sampler = B.Sampler({"gateway": pid})
    total = args.warmup + args.calls
    done = 0
    failed: dict[str, int] = {}
    samples: list[dict] = []
    baseline: dict | None = None
    started = time.monotonic()

    def record_failure(error: str) -> None:
        key = error[:160]
        failed[key] = failed.get(key, 0) + 1

    next_index = 0

    async def lane() -> None:
        nonlocal next_index, done, baseline
        while next_index < total:
            next_index += 1
            report = await run_call(url, turns, wait_for_greeting=False, reply_quiet_ms=300,
                                    max_reply_wait_s=10, max_call_s=args.max_call_s, record_audio=False)
            if report.error or not report.completed:
                record_failure(report.error or "script not completed")
            done += 1
            if done == args.warmup:
                await asyncio.sleep(0.5)
                baseline = {"calls": 0, **(_resources(sampler) or {})}
                samples.append(baseline)
            elif done > args.warmup and (done - args.warmup) % args.sample_every == 0:
                snap = _resources(sampler)
                if snap is not None:
                    samples.append({"calls": done - args.warmup, **snap})
                    print(f"  {done - args.warmup:>5} calls  RSS {snap['rss'] / 2**20:7.1f} MB  fds {snap['fds']:>4}  "
                          f"threads {snap['threads']:>3}  tcp {snap['tcp']:>4}", flush=True)

    if args.warmup == 0:
        baseline = {"calls": 0, **(_resources(sampler) or {})}
        samples.append(baseline)
    await asyncio.gather(*(lane() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - started

    # Let the last calls end and their provider sockets close, then compare with the baseline.
    deadline = time.monotonic() + SETTLE_S
    while True:
        settled = _resources(sampler)
        active = await asyncio.to_thread(_active_calls, metrics_url)
        back = bool(baseline and settled and settled["fds"] <= baseline["fds"] + FD_SLACK
                    and settled["tcp"] <= baseline["tcp"] + FD_SLACK)
        if (back and active in (None, 0.0)) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)

    rss_points = [(s["calls"], s["rss"]) for s in samples if "rss" in s]
    growth_mb = (rss_points[-1][1] - rss_points[0][1]) / 2**20 if len(rss_points) > 1 else None
    slope = _slope_kb_per_100(rss_points)
    # The second half: RSS climbs for the first few hundred calls (malloc arenas, pools, caches
    # filling) and then must stay flat; a leak keeps climbing.
    late = [p for p in rss_points if p[0] >= args.calls / 2]
    late_growth_mb = (late[-1][1] - late[0][1]) / 2**20 if len(late) > 1 else None
    late_slope = _slope_kb_per_100(late)
    checks = {
        "rss_growth_under_bound": growth_mb is not None and growth_mb <= args.max_growth_mb,
        "late_growth_under_bound": (args.max_late_growth_mb <= 0 or late_growth_mb is None
                                    or late_growth_mb <= args.max_late_growth_mb),
        "fds_back": bool(baseline and settled and settled["fds"] <= baseline["fds"] + FD_SLACK),
        "tcp_back": bool(baseline and settled and settled["tcp"] <= baseline["tcp"] + FD_SLACK),
        "threads_back": bool(baseline and settled and settled["threads"] <= baseline["threads"] + THREAD_SLACK),
        "no_active_calls": active in (None, 0.0),
        "no_failed_calls": not failed,
    }
    return {
        "tool": "bench/leak.py",
        "calls": args.calls, "warmup": args.warmup, "concurrency": args.concurrency,
        "elapsed_s": round(elapsed, 1), "calls_per_s": round(total / elapsed, 2) if elapsed else None,
        "failed": sum(failed.values()), "errors": failed,
        "rss_baseline_mb": round(rss_points[0][1] / 2**20, 1) if rss_points else None,
        "rss_final_mb": round(rss_points[-1][1] / 2**20, 1) if rss_points else None,
        "rss_growth_mb": None if growth_mb is None else round(growth_mb, 2),
        "rss_slope_kb_per_100_calls": None if slope is None else round(slope, 1),
        "max_growth_mb": args.max_growth_mb,
        "rss_late_growth_mb": None if late_growth_mb is None else round(late_growth_mb, 2),
        "rss_late_slope_kb_per_100_calls": None if late_slope is None else round(late_slope, 1),
        "late_from_calls": late[0][0] if late else None,
        "max_late_growth_mb": args.max_late_growth_mb,
        "baseline": baseline, "after": settled, "active_calls_after": active,
        "samples": samples, "checks": checks, "ok": all(checks.values()),
        "slack": {"fds": FD_SLACK, "tcp": FD_SLACK, "threads": THREAD_SLACK},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    opts = B.BenchOptions(spawn=not args.url, url=args.url, gateway_pid=args.gateway_pid,
                          gateway_cpu=args.gateway_cpu, loadgen_cpu=args.loadgen_cpu,
                          emulators_cpu=args.loadgen_cpu, concurrency=args.concurrency,
                          gateway_command=args.gateway_command, gateway_log_level="WARNING",
                          stt_final_delay=0.0, llm_first_token=0.0, tts_first_byte=0.0, llm_token_rate=1000.0,
                          llm_reply=REPLY, unique_replies=False)
    if args.loadgen_cpu is not None:
        import os

        os.sched_setaffinity(0, {args.loadgen_cpu})
    print(f"leak run: {args.warmup} warm-up + {args.calls} calls, {args.concurrency} at a time", flush=True)
    if opts.spawn:
        with B.spawned_stack(opts) as stack:
            report = B._run_loop(leak_run(args, stack.url, stack.gateway_pid, stack.metrics_url))
    else:
        if args.gateway_pid is None:
            print("leak.py: --gateway-pid is required with --url", file=sys.stderr)
            return 2
        B.pin(args.gateway_pid, args.gateway_cpu)
        metrics = args.metrics_url or B.default_metrics_url(args.url)
        report = B._run_loop(leak_run(args, args.url, args.gateway_pid, metrics))
    print(f"RSS {report['rss_baseline_mb']} MB -> {report['rss_final_mb']} MB over {args.calls} calls: "
          f"growth {report['rss_growth_mb']} MB (bound {args.max_growth_mb} MB), slope "
          f"{report['rss_slope_kb_per_100_calls']} kB/100 calls; second half (from call {report['late_from_calls']}): "
          f"{report['rss_late_growth_mb']} MB (bound {args.max_late_growth_mb or 'none'}), slope "
          f"{report['rss_late_slope_kb_per_100_calls']} kB/100 calls; {report['failed']} failed; "
          f"{report['elapsed_s']} s")
    print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in report["checks"].items()))
    if report["errors"]:
        for msg, n in report["errors"].items():
            print(f"  {n} x {msg}")
    if args.json_path:
        B.write_json(args.json_path, report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
