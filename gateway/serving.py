"""Serving under uvicorn with a drain on deploy: SIGTERM stops new calls and lets calls finish.

uvicorn's own handling of SIGTERM (`Server.handle_exit`) sets `should_exit` at once. Its shutdown
then closes the listening socket, sends every WebSocket a 1012 close (`connection.shutdown()`) and
waits up to `timeout_graceful_shutdown` for connections to end: every call in progress is cut
within milliseconds, and `/readyz` stops answering instead of saying 503.

`DrainingServer` changes only the first SIGTERM. It starts the application's drain
(`gateway.app.Gateway.drain`: `/readyz` 503, new calls sent elsewhere, calls in progress go on up to
`DRAIN_SECONDS`, then each is handed over to another instance) while the server keeps serving, and
sets `should_exit` when the drain is done; uvicorn's ordinary shutdown follows, with nothing left
to cut, bounded by `timeout_graceful_shutdown` (`SHUTDOWN_GRACE_SECONDS`). A second SIGTERM, or a
SIGINT at any time, is uvicorn's own exit, made immediate (`force_exit`): calls still up get the
1012 close, and Twilio's `<Redirect>` resumes them elsewhere from their last saved turn. As uvicorn
does, the signal is raised again once the server is down, so the process ends as the signal asks.

With several workers (`voicegate serve --workers N`), uvicorn's supervisor sends each worker SIGTERM
and waits for them: `DrainingMultiprocess` starts them as `DrainingServer`s, so each drains its own
calls, and passes a second signal on to them, where uvicorn's supervisor would sit in `join` and
ignore it. (Workers added later by SIGTTIN or restarted by SIGHUP are uvicorn's plain ones: they end
at once on SIGTERM.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("voicegate.serving")

# After the drain, uvicorn's shutdown waits this long for the connections left (a dashboard's live
# feed, idle keep-alive requests) before cancelling them: the calls are gone by then.
SHUTDOWN_GRACE_SECONDS = 5.0
# The supervisor looks for a second signal this often while its workers drain.
SUPERVISOR_POLL_SECONDS = 0.2


def _gateway_of(app: object) -> object | None:
    """The `gateway.app.Gateway` behind uvicorn's wrapping of the ASGI app (proxy headers, logging)."""
    for _ in range(10):
        state = getattr(app, "state", None)
        gateway = getattr(state, "gateway", None) if state is not None else None
        if gateway is not None:
            return gateway
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task | None = None
        self.draining = False

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway = _gateway_of(self.config.loaded_app)
        first_term = sig == signal.SIGTERM and not self.draining and not self.should_exit
        if first_term and self.started and self._loop is not None and gateway is not None:
            self.draining = True
            self._captured_signals.append(sig)  # raised again once the server is down, as uvicorn does
            self._loop.call_soon_threadsafe(self._start_drain, gateway)
            return
        if self.draining:
            log.warning("second signal while draining: ending now")
            self.force_exit = True
        super().handle_exit(sig, frame)

    def _start_drain(self, gateway) -> None:
        if self.should_exit:
            return
        self._drain = gateway.drain()  # a task on this loop
        self._drain.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the drain failed; shutting down", exc_info=task.exception())
        self.should_exit = True  # uvicorn's own shutdown, with no call left to cut


class DrainingProcess(Process):
    """A worker that runs a `DrainingServer` (pickled by reference into the spawned worker)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class DrainingMultiprocess(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets) -> None:
        super().__init__(config, sockets)
        self._exit_signal = signal.SIGTERM

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = DrainingProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, starting a `DrainingProcess` in place of a worker that died."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or dead
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail the same way again: stop
                log.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker [%s] died; starting another", process.pid)
            replacement = DrainingProcess(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def handle_int(self) -> None:
        log.info("Received SIGINT: the workers end now, without a drain")
        self._exit_signal = signal.SIGINT
        self.should_exit.set()

    def terminate_all(self) -> None:
        for process in self.processes:
            if process.process.exitcode is None and process.pid is not None:
                os.kill(process.pid, self._exit_signal)

    def join_all(self) -> None:
        """Wait for the workers; a signal meanwhile (a second SIGTERM, a SIGINT) goes on to them."""
        self.signal_queue.clear()
        while any(p.process.is_alive() for p in self.processes):
            for process in self.processes:
                process.process.join(SUPERVISOR_POLL_SECONDS / max(1, len(self.processes)))
            if self.signal_queue:
                sig = signal.SIGINT if signal.SIGINT in self.signal_queue else signal.SIGTERM
                self.signal_queue.clear()
                log.warning("signal while the workers drain: passing it on, they end now")
                for process in self.processes:
                    if process.process.is_alive() and process.pid is not None:
                        os.kill(process.pid, sig)
