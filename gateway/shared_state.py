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
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from typing import Awaitable, Callable

import orjson

log = logging.getLogger("voicegate.shared")

CONTEXT_TTL_SECONDS = 3600.0  # a resumed call comes back within seconds; an hour covers any call
ENDED_TTL_SECONDS = 600.0  # Twilio asks for the TwiML after <Connect> within seconds of the stream closing
WORKER_TTL_SECONDS = 30.0  # a dead worker's calls vanish from the registry this long after its last beat
HEARTBEAT_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 0.5  # a slower Redis is treated as absent for that operation
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

    async def _do(self, what: str, op: Awaitable, default=None):
        try:
            return await asyncio.wait_for(op, REDIS_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("redis %s failed: %s", what, type(exc).__name__)
            return default

    async def start(self) -> None:
        await self._do("ping", self._redis.ping())
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat()), loop.create_task(self._listen())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
        await self._do("save context", self._redis.set(f"{PREFIX}ctx:{call_sid}", orjson.dumps(context),
                                                       ex=int(CONTEXT_TTL_SECONDS)))

    async def load_context(self, call_sid: str) -> dict | None:
        raw = await self._do("load context", self._redis.get(f"{PREFIX}ctx:{call_sid}"))
        return orjson.loads(raw) if raw else None

    async def mark_ended(self, call_sid: str, how: str) -> None:
        pipe = self._redis.pipeline()
        pipe.set(f"{PREFIX}ended:{call_sid}", how, ex=int(ENDED_TTL_SECONDS))
        pipe.delete(f"{PREFIX}ctx:{call_sid}")
        await self._do("mark ended", pipe.execute())

    async def drop_context(self, call_sid: str) -> None:
        await self._do("drop context", self._redis.delete(f"{PREFIX}ctx:{call_sid}"))

    async def ended(self, call_sid: str) -> str | None:
        raw = await self._do("ended", self._redis.get(f"{PREFIX}ended:{call_sid}"))
        return raw.decode() if raw else None

    async def publish(self, kind: str, data: dict) -> None:
        payload = orjson.dumps({"kind": kind, "data": data, "worker": self.worker})
        await self._do("publish", self._redis.publish(EVENTS_CHANNEL, payload))

    async def _listen(self) -> None:
        """Events from every worker (this one included) go to this worker's subscribers."""
        while True:
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
                log.warning("redis event channel lost (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(1.0)

    def cache_backend(self):
        return RedisCacheBackend(self._redis)


class RedisCacheBackend:
    def __init__(self, redis) -> None:
        self._redis = redis

    async def get(self, key: str) -> str | None:
        raw = await self._redis.get(PREFIX + key)
        return raw.decode() if raw else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._redis.set(PREFIX + key, value, ex=max(1, int(ttl)))


def shared_state(redis_url: str) -> LocalState:
    return RedisState(redis_url) if redis_url else LocalState()
