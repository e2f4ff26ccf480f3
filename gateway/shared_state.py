"""State that several worker processes share: in Redis when `REDIS_URL` is set, else in this process.

- The live call registry: which calls are up, on which worker (for the dashboard and `/api/calls`).
  Each worker keeps its calls in one hash with a short TTL that it refreshes on a heartbeat, so the
  calls of a worker that died disappear within `WORKER_TTL_SECONDS` without anyone cleaning up.
- The conversation context of each call (the dialog's slots and state, and the history the caller
  heard), saved after every turn with a TTL. If the worker serving a call dies, Twilio runs the TwiML
  after `<Connect>` (a `<Redirect>` to `/twilio/voice`), a new stream starts on any worker, and it
  resumes the conversation from here.
- How a call ended (hang-up or transfer), read by `/twilio/voice` when Twilio asks what to do after a
  stream closed: whichever worker gets that request must know.
- The response cache backend (`dialog.latency`), and a pub/sub channel that carries dashboard events
  to every worker's dashboard hub.

Every Redis call is bounded by a short timeout: shared state helps a call, it must never stall one.

Redis down (at startup, dying mid-call, coming back). Calls go on with in-process state: every write
also lands in this process's own bounded maps (a call resumed on this process still finds its
context), and every read falls back to them. The first failure puts the state in degraded mode: one
warning in the log, `/readyz` says so (`describe()`), `voicegate_redis_up` is 0 and each failed or
skipped operation is counted. While degraded, operations are not sent (each would wait out its
timeout on a Redis that does not answer); a probe pings every `REDIS_RETRY_SECONDS` instead. When
Redis answers again, the worker's registry entry and the contexts of its live calls are written back
(a Redis that restarted empty learns them again), and the event channel resubscribes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from typing import Awaitable, Callable

import orjson

from gateway import metrics

log = logging.getLogger("voicegate.shared")

CONTEXT_TTL_SECONDS = 3600.0  # a resumed call comes back within seconds; an hour covers any call
ENDED_TTL_SECONDS = 600.0  # Twilio asks for the TwiML after <Connect> within seconds of the stream closing
WORKER_TTL_SECONDS = 30.0  # a dead worker's calls vanish from the registry this long after its last beat
HEARTBEAT_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 0.5  # a slower Redis is treated as absent for that operation
# While Redis is down, a ping this often finds it back: a second of degraded mode after it returns
# costs little (calls run on in-process state), a faster probe would only add load to a sick Redis.
REDIS_RETRY_SECONDS = 1.0
MAX_LOCAL_ENTRIES = 10_000  # in-process maps are bounded like the Redis keys are by TTL
EVENTS_CHANNEL = "voicegate:events"
PREFIX = "voicegate:"


class _TtlMap:
    def __init__(self, clock=time.monotonic) -> None:
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._clock = clock

    def set(self, key: str, value: str, ttl: float) -> None:
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > MAX_LOCAL_ENTRIES:
            self._items.popitem(last=False)

    def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            self._items.pop(key, None)
            return None
        return item[1]

    def delete(self, key: str) -> None:
        self._items.pop(key, None)


class LocalState:
    """One process: plain bounded maps. Also what `RedisState` falls back to when Redis is down."""

    backend = "memory"

    def __init__(self) -> None:
        self._calls: dict[str, dict] = {}
        self._map = _TtlMap()
        self._subscribers: list[Callable[[str, dict], None]] = []
        self.worker = str(os.getpid())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def degraded(self) -> bool:
        return False

    async def register_call(self, call_sid: str, info: dict) -> None:
        self._calls[call_sid] = {**info, "worker": self.worker}

    async def unregister_call(self, call_sid: str) -> None:
        self._calls.pop(call_sid, None)

    async def live_calls(self) -> list[dict]:
        return [{"call_sid": sid, **info} for sid, info in self._calls.items()]

    async def save_context(self, call_sid: str, context: dict) -> None:
        self._map.set("ctx:" + call_sid, orjson.dumps(context).decode(), CONTEXT_TTL_SECONDS)

    async def load_context(self, call_sid: str) -> dict | None:
        raw = self._map.get("ctx:" + call_sid)
        return orjson.loads(raw) if raw else None

    async def mark_ended(self, call_sid: str, how: str) -> None:
        self._map.set("ended:" + call_sid, how, ENDED_TTL_SECONDS)
        self._map.delete("ctx:" + call_sid)

    async def drop_context(self, call_sid: str) -> None:
        """The call is over for good (Twilio sent `stop`): nothing will resume it."""
        self._map.delete("ctx:" + call_sid)

    async def ended(self, call_sid: str) -> str | None:
        return self._map.get("ended:" + call_sid)

    async def publish(self, kind: str, data: dict) -> None:
        for subscriber in list(self._subscribers):
            subscriber(kind, data)

    def subscribe(self, callback: Callable[[str, dict], None]) -> None:
        self._subscribers.append(callback)

    def cache_backend(self):
        return None  # dialog.latency's MemoryBackend is the in-process default

    def describe(self) -> dict:
        return {"backend": self.backend, "worker": self.worker}


class RedisState(LocalState):
    backend = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._tasks: list[asyncio.Task] = []
        self._worker_key = f"{PREFIX}worker:{self.worker}:calls"
        self._up = True  # until an operation fails
        self._down_since: float | None = None  # wall time degraded mode began
        self._probe: asyncio.Task | None = None
        self.outages = 0

    @property
    def degraded(self) -> bool:
        return not self._up

    async def _do(self, what: str, op: Awaitable, default=None):
        if not self._up:
            _close(op)  # degraded: the probe finds Redis back; meanwhile nobody waits on it
            metrics.REDIS_ERRORS.labels(what).inc()
            return default
        try:
            return await asyncio.wait_for(op, REDIS_TIMEOUT_SECONDS)
        except Exception as exc:
            metrics.REDIS_ERRORS.labels(what).inc()
            self._went_down(what, exc)
            return default

    def _went_down(self, what: str, exc: BaseException) -> None:
        if not self._up:
            return
        self._up = False
        self._down_since = time.time()
        self.outages += 1
        metrics.REDIS_UP.set(0)
        metrics.REDIS_OUTAGES.inc()
        log.warning("redis unavailable (%s failed: %s): shared state is degraded, calls go on with in-process "
                    "state; retrying every %g s", what, type(exc).__name__, REDIS_RETRY_SECONDS)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._probe is None or self._probe.done():
            self._probe = loop.create_task(self._until_back())

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(REDIS_RETRY_SECONDS)
            try:
                await asyncio.wait_for(self._redis.ping(), REDIS_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            down_for = time.time() - (self._down_since or time.time())
            self._up, self._down_since = True, None
            metrics.REDIS_UP.set(1)
            log.warning("redis is back after %.1f s: shared state restored", down_for)
            await self._resync()
            return

    async def _resync(self) -> None:
        """Redis may have restarted empty: write back this worker's registry entry and the contexts
        of its live calls (the contexts' local copies are current: every save writes them too)."""
        mapping = {sid: orjson.dumps({**info, "worker": self.worker}) for sid, info in self._calls.items()}
        await self._do("resync registry", self._write_calls(mapping, replace=True))
        for sid in list(self._calls):
            raw = self._map.get("ctx:" + sid)
            if raw is not None:
                await self._do("resync context", self._redis.set(f"{PREFIX}ctx:{sid}", raw, ex=int(CONTEXT_TTL_SECONDS)))

    async def start(self) -> None:
        metrics.REDIS_UP.set(1)
        await self._do("ping", self._redis.ping())
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat()), loop.create_task(self._listen())]

    async def close(self) -> None:
        for task in [*self._tasks, self._probe]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._tasks, *([self._probe] if self._probe else []), return_exceptions=True)
        await self._do("cleanup", self._redis.delete(self._worker_key))
        await self._redis.aclose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            # Rebuilt whole each beat: an entry a racing write brought back lives one beat at most.
            mapping = {sid: orjson.dumps({**info, "worker": self.worker}) for sid, info in self._calls.items()}
            await self._do("heartbeat", self._write_calls(mapping, replace=True))

    async def _write_calls(self, mapping: dict, replace: bool = False) -> None:
        pipe = self._redis.pipeline(transaction=True)
        if replace:
            pipe.delete(self._worker_key)
        if mapping:
            pipe.hset(self._worker_key, mapping=mapping)
            pipe.expire(self._worker_key, int(WORKER_TTL_SECONDS))
        await pipe.execute()

    async def register_call(self, call_sid: str, info: dict) -> None:
        await super().register_call(call_sid, info)
        await self._do("register", self._write_calls({call_sid: orjson.dumps({**info, "worker": self.worker})}))

    async def unregister_call(self, call_sid: str) -> None:
        await super().unregister_call(call_sid)
        await self._do("unregister", self._redis.hdel(self._worker_key, call_sid))

    async def live_calls(self) -> list[dict]:
        async def scan() -> list[dict]:
            calls = []
            async for key in self._redis.scan_iter(match=f"{PREFIX}worker:*:calls", count=100):
                for sid, raw in (await self._redis.hgetall(key)).items():
                    calls.append({"call_sid": sid.decode(), **orjson.loads(raw)})
            return calls

        calls = await self._do("live calls", scan())
        return calls if calls is not None else await super().live_calls()

    async def save_context(self, call_sid: str, context: dict) -> None:
        raw = orjson.dumps(context)
        await super().save_context(call_sid, context)  # a resume on this process needs no Redis
        await self._do("save context", self._redis.set(f"{PREFIX}ctx:{call_sid}", raw, ex=int(CONTEXT_TTL_SECONDS)))

    async def load_context(self, call_sid: str) -> dict | None:
        raw = await self._do("load context", self._redis.get(f"{PREFIX}ctx:{call_sid}"))
        return orjson.loads(raw) if raw else await super().load_context(call_sid)

    async def mark_ended(self, call_sid: str, how: str) -> None:
        await super().mark_ended(call_sid, how)
        pipe = self._redis.pipeline()
        pipe.set(f"{PREFIX}ended:{call_sid}", how, ex=int(ENDED_TTL_SECONDS))
        pipe.delete(f"{PREFIX}ctx:{call_sid}")
        await self._do("mark ended", pipe.execute())

    async def drop_context(self, call_sid: str) -> None:
        await super().drop_context(call_sid)
        await self._do("drop context", self._redis.delete(f"{PREFIX}ctx:{call_sid}"))

    async def ended(self, call_sid: str) -> str | None:
        raw = await self._do("ended", self._redis.get(f"{PREFIX}ended:{call_sid}"))
        return raw.decode() if raw else await super().ended(call_sid)

    async def publish(self, kind: str, data: dict) -> None:
        if not self._up:
            await super().publish(kind, data)  # degraded: this worker's dashboard still sees its calls
            return
        payload = orjson.dumps({"kind": kind, "data": data, "worker": self.worker})
        await self._do("publish", self._redis.publish(EVENTS_CHANNEL, payload))

    async def _listen(self) -> None:
        """Events from every worker (this one included) go to this worker's subscribers."""
        while True:
            pubsub = None
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(EVENTS_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    event = orjson.loads(message["data"])
                    for subscriber in list(self._subscribers):
                        subscriber(event["kind"], event["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.REDIS_ERRORS.labels("event channel").inc()
                self._went_down("event channel", exc)
                await asyncio.sleep(REDIS_RETRY_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pubsub.aclose(), REDIS_TIMEOUT_SECONDS)

    def cache_backend(self):
        return RedisCacheBackend(self)

    def describe(self) -> dict:
        out = {**super().describe(), "status": "degraded" if not self._up else "ok", "outages": self.outages}
        if self._down_since is not None:
            out["degraded_for_s"] = round(time.time() - self._down_since, 1)
        return out


def _close(op: Awaitable) -> None:
    """An operation not sent: a coroutine never awaited must be closed, or Python warns about it."""
    close = getattr(op, "close", None)
    if close is not None:
        close()


class RedisCacheBackend:
    """The response cache in Redis. A miss when Redis is down: the reply is phrased afresh, never failed."""

    def __init__(self, state: RedisState) -> None:
        self._state = state

    async def get(self, key: str) -> str | None:
        raw = await self._state._do("cache get", self._state._redis.get(PREFIX + key))
        return raw.decode() if raw else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._state._do("cache set", self._state._redis.set(PREFIX + key, value, ex=max(1, int(ttl))))


def shared_state(redis_url: str) -> LocalState:
    return RedisState(redis_url) if redis_url else LocalState()
