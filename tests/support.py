"""Test support: free ports, the real gateway as a subprocess on 127.0.0.1, and polling until a check holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from loadgen.bench import free_port, stop_process  # noqa: F401  (the benchmarks' helpers serve the tests too)


ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120  # model loading on a cold, busy 2-core CI machine
POLL_S = 0.1  # `eventually`'s checks mostly ask the gateway, which allows 20 requests/s per client


@dataclass
class RunningGateway:
    url: str
    port: int
    db: str
    process: subprocess.Popen
    log_path: Path
    token: str = ""  # DASHBOARD_TOKEN, sent as a bearer token when the gateway has one

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stored_call(self, call_sid: str, until=lambda call: call.get("end_reason"), timeout: float = 10.0) -> dict:
        """The call as stored, once `until(call)` holds (the store is written just after the socket closes)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get(f"/api/calls/{call_sid}")
            call = json.loads(body) if status == 200 else {}
            if (call and until(call)) or time.monotonic() > deadline:
                return call
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers),
                                        timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:  # closes the response it holds
                return exc.code, exc.read()


@contextlib.contextmanager
def run_gateway(env: dict[str, str] | None = None, ready: bool = True, args: tuple[str, ...] = ()) -> Iterator[RunningGateway]:
    """Start `python -m gateway serve` on a free port; wait for /readyz (or /healthz if ready=False)."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-test-"))
    db = str(tmp / "voicegate.db")
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("TWILIO_")}
    full_env.update({
        "PORT": str(port), "HOST": "127.0.0.1", "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VOICEGATE_DB": db, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
    })
    full_env.update(env or {})
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", *args], cwd=ROOT, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    gateway = RunningGateway(f"http://127.0.0.1:{port}", port, db, process, log_path,
                             token=full_env.get("DASHBOARD_TOKEN", ""))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        path = "/readyz" if ready else "/healthz"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.logs()[-3000:]}")
            with contextlib.suppress(OSError):
                status, _ = gateway.get(path, timeout=2)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready after {READY_TIMEOUT_S}s:\n{gateway.logs()[-3000:]}")
            time.sleep(0.2)
        yield gateway
    finally:
        stop_process(process)


@dataclass
class RunningEmulators:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> dict:
        with urllib.request.urlopen(self.url + "/_emulator/log", timeout=10) as resp:
            return json.loads(resp.read())

    def configure(self, change: dict) -> None:
        req = urllib.request.Request(self.url + "/_emulator/config", data=json.dumps(change).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def reset(self) -> None:
        with urllib.request.urlopen(urllib.request.Request(self.url + "/_emulator/reset", data=b"", method="POST"),
                                    timeout=10):
            pass

    def gateway_env(self) -> dict[str, str]:
        """Environment that points the gateway's three cloud engines (and Twilio REST) at these emulators."""
        return {
            "DEEPGRAM_API_KEY": "dg-test-key", "DEEPGRAM_BASE_URL": self.url,
            "OPENAI_API_KEY": "sk-test-key", "OPENAI_BASE_URL": self.url + "/v1",
            "ELEVENLABS_API_KEY": "xi-test-key", "ELEVENLABS_BASE_URL": self.url,
        }


@contextlib.contextmanager
def run_emulators(*args: str) -> Iterator[RunningEmulators]:
    """`voicegate emulate` on a free port, as its own process (the gateway under test is another)."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-emu-"))
    log_path = tmp / "emulators.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "emulators.cli", "--port", str(port), *args], cwd=ROOT,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    emulators = RunningEmulators(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"emulators exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                emulators.log()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("emulators did not start")
            time.sleep(0.1)
        yield emulators
    finally:
        stop_process(process)


@contextlib.contextmanager
def run_redis() -> Iterator[str]:
    """A real redis-server on a free port, no persistence; yields its URL."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="voicegate-redis-"))
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process)


async def eventually(check: Callable[[], Any], what: str, timeout: float, poll_s: float = POLL_S) -> Any:
    """Poll `check` (blocking HTTP, so off the event loop the calls run on) until it is truthy; its result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(poll_s)
