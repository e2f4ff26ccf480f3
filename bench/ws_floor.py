"""The floor under the gateway's CPU: bare uvicorn carrying the Twilio socket traffic of N calls.

    .venv/bin/python bench/ws_floor.py                    # 100 connections, 20 s
    .venv/bin/python bench/ws_floor.py --calls 100 --seconds 20 --ws websockets-sansio

A minimal ASGI app (no Starlette, no voicegate code) accepts N WebSockets on uvicorn, pinned like the
matrix's gateway (core 0); a client process on core 1 sends each one a 20 ms Twilio `media` message
every 20 ms, at phases spread over the frame clock, and the app sends back five frames per 100 ms, as
voicegate's pacer does while a reply plays. What the server process costs in that steady state (user
and system CPU, % of one core) is what the same traffic costs any Python gateway on uvicorn, before
it does anything with the audio: subtract it from `bench/matrix.py`'s figure to see what voicegate's
own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import psutil

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from benchlib import ROOT, wait_quiet  # noqa: E402

from loadgen.bench import BenchOptions, call_offsets, free_port  # noqa: E402
from loadgen.simcaller import FRAME_BYTES, FRAME_S  # noqa: E402
from gateway.twilio_protocol import inbound_media_message  # noqa: E402

SETTLE_S = 4.0  # connections up and sending before the measurement starts
MEDIA = inbound_media_message("MZ" + "0" * 32, b"\xff" * FRAME_BYTES, 1, 1, 20)
FRAMES_PER_REPLY_BATCH = 5


async def app(scope, receive, send):
    """Accept, then answer every fifth inbound frame with five outbound frames (the pacer's 100 ms)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    await send({"type": "websocket.accept"})
    n = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        n += 1
        if n % FRAMES_PER_REPLY_BATCH == 0:
            for _ in range(FRAMES_PER_REPLY_BATCH):
                await send({"type": "websocket.send", "text": message["text"]})


async def clients(url: str, calls: int, seconds: float) -> None:
    import websockets

    async def one(offset: float) -> None:
        async with websockets.connect(url, compression=None, max_queue=None) as ws:
            async def drain() -> None:
                async for _ in ws:
                    pass

            reader = asyncio.create_task(drain())
            await asyncio.sleep(offset)
            t0, n = time.monotonic(), 0
            while time.monotonic() - t0 < seconds:
                n += 1
                await ws.send(MEDIA)
                await asyncio.sleep(max(0.0, t0 + n * FRAME_S - time.monotonic()))
            reader.cancel()

    await asyncio.gather(*(one(o) for o in call_offsets(calls, BenchOptions(concurrency=calls).ramp)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0, help="measured steady state")
    p.add_argument("--ws", default="websockets-sansio", help="uvicorn's --ws implementation")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--wait-quiet-s", type=float, default=30.0)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        import uvloop

        uvloop.run(clients(args.url, args.calls, args.seconds))
        return 0
    wait_quiet(args.wait_quiet_s)
    port = free_port()
    server = subprocess.Popen(["taskset", "-c", str(args.server_cpu), sys.executable, "-m", "uvicorn",
                               "ws_floor:app", "--app-dir", str(ROOT / "bench"), "--port", str(port),
                               "--ws", args.ws, "--loop", "uvloop", "--log-level", "warning"])
    try:
        time.sleep(2.0)
        ramp = BenchOptions(concurrency=args.calls).ramp
        client = subprocess.Popen(["taskset", "-c", str(args.client_cpu), sys.executable, __file__, "--client",
                                   "--url", f"ws://127.0.0.1:{port}/", "--calls", str(args.calls),
                                   "--seconds", str(args.seconds + ramp + SETTLE_S + 1.0)])
        proc = psutil.Process(server.pid)
        time.sleep(ramp + SETTLE_S)
        before, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = proc.cpu_times(), time.monotonic() - t0
        client.wait()
    finally:
        server.terminate()
        server.wait()
    user = 100.0 * (after.user - before.user) / elapsed
    system = 100.0 * (after.system - before.system) / elapsed
    print(json.dumps({"calls": args.calls, "ws": args.ws, "seconds": round(elapsed, 1),
                      "inbound_msgs_per_s": round(args.calls / FRAME_S),
                      "server_cpu_pct": round(user + system, 1), "user_pct": round(user, 1),
                      "system_pct": round(system, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
