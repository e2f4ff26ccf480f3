"""The call core's own CPU per inbound frame, without sockets, SDKs or an event loop: this tree's or
another checkout's (`--src`), to tell the core's share of a change in the gateway's CPU from the rest.

A `CallSession` is fed 20 ms frames of a quiet line on a simulated clock while its greeting plays (the
agent's audio released by the pacer, marks echoed 300 ms later, ticks when `next_deadline` is due), as
the media endpoint drives it; the process CPU time over all frames, per frame.

    .venv/bin/python bench/core_cost.py
    git worktree add /tmp/nov e4374a8 && .venv/bin/python bench/core_cost.py --src /tmp/nov
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GREETING = "Hi, thanks for calling the clinic. Would you like to book an appointment? We are open all week."
MARK_ECHO_S = 0.3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=ROOT, help="the checkout whose call core to run")
    p.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per call")
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args(argv)
    src = args.src.resolve()
    sys.path.insert(0, str(src))
    # The events moved from gateway/ to dialog/ in December; a November checkout has them in gateway/.
    events = importlib.import_module("gateway.events" if (src / "gateway/events.py").exists() else "dialog.events")
    session_module = importlib.import_module("gateway.session")
    mulaw = importlib.import_module("audio.mulaw")
    if not Path(session_module.__file__).resolve().is_relative_to(src):
        print(f"gateway.session came from {session_module.__file__}, not {src}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    quiet = mulaw.encode((rng.standard_normal(160) * 30).astype(np.int16))  # a line's hiss, under the VAD
    t = np.arange(8000 * 3) / 8000
    voice = mulaw.encode((np.sin(2 * np.pi * 180 * t) * 6000 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
                         .astype(np.int16))  # 3 s of "speech" per sentence of the greeting

    def call() -> tuple[int, int]:
        s = session_module.CallSession(session_module.SessionSettings())
        now, sent, marks = 100.0, 0, []

        def carry(actions: list) -> None:
            nonlocal sent
            for a in actions:
                name = type(a).__name__
                if name == "Synthesize":
                    carry(s.handle(events.SpeechAudio(now, a.turn_id, a.sentence, voice)))
                    carry(s.handle(events.SpeechDone(now, a.turn_id, a.sentence)))
                elif name == "SendMedia":
                    sent += 1
                elif name == "SendMark":
                    marks.append((now + MARK_ECHO_S, a.name))

        carry(s.handle(events.CallStarted(now, "CA1", "MZ1")))
        carry(s.handle(events.ReplyDelta(now, 0, GREETING)))
        carry(s.handle(events.ReplyDone(now, 0)))
        frames = int(args.seconds / 0.02)
        for _ in range(frames):
            now += 0.02
            carry(s.audio(now, quiet))
            while marks and marks[0][0] <= now:
                carry(s.handle(events.MarkEchoed(now, marks.pop(0)[1])))
            due = s.next_deadline()
            if due is not None and due <= now:
                carry(s.handle(events.Tick(now)))
        return frames, sent

    started = time.process_time()
    frames = sent = 0
    for _ in range(args.calls):
        f, o = call()
        frames, sent = frames + f, sent + o
    per_frame = (time.process_time() - started) / frames
    print(f"{src}: {per_frame * 1e6:.2f} µs of CPU per inbound frame ({sent / frames:.2f} agent frames sent each); "
          f"at 100 calls, {per_frame * 5000 * 100:.1f} % of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
