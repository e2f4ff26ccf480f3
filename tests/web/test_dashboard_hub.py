"""The dashboard hub: snapshot then events, bounded queues, slow subscribers dropped, status push."""

from __future__ import annotations

import asyncio

import orjson

from gateway.dashboard import DashboardHub, Subscriber


def _turn(turn_id: int, text: str = "hello") -> dict:
    return {"turn_id": turn_id, "user_text": text, "agent_text": "Sure.", "heard_text": "Sure.", "interrupted": False,
            "dtmf": "", "timings": {"vad_ms": 500.0, "stt_ms": 300.0, "voice_to_voice_ms": 900.0}, "at": 1.0}


async def _next(sub: Subscriber) -> dict:
    message = await asyncio.wait_for(sub.next(), 2.0)
    assert message is not None
    return orjson.loads(message)


async def test_snapshot_first_then_events_without_gap_or_overlap():
    hub = DashboardHub(status=lambda: {"ready": True}, status_interval=0)
    hub.publish("call_started", {"call_sid": "CA1", "caller": "+1555***1234", "direction": "inbound"})
    hub.publish("turn", {"call_sid": "CA1", **_turn(0, None)})
    hub.publish("turn", {"call_sid": "CA1", **_turn(1)})
    sub = hub.subscribe()
    hub.publish("turn", {"call_sid": "CA1", **_turn(2, "tomorrow at three")})
    hub.publish("call_ended", {"call_sid": "CA1", "reason": "stop"})

    snapshot = await _next(sub)
    assert snapshot["type"] == "snapshot"
    assert snapshot["status"] == {"ready": True}
    [call] = snapshot["live"]
    assert call["call_sid"] == "CA1" and call["caller"] == "+1555***1234" and call["direction"] == "inbound"
    assert [t["turn_id"] for t in call["turns"]] == [0, 1]  # turn 2 comes as an event, not twice
    turn = await _next(sub)
    assert turn["type"] == "turn" and turn["call_sid"] == "CA1" and turn["turn"]["user_text"] == "tomorrow at three"
    assert "call_sid" not in turn["turn"]
    ended = await _next(sub)
    assert ended == {"type": "call_ended", "call_sid": "CA1", "reason": "stop", "ended_at": ended["ended_at"]}
    assert hub.live == {}
    assert hub.recent[0]["call_sid"] == "CA1" and len(hub.recent[0]["turns"]) == 3

    later = hub.subscribe()
    snapshot = await _next(later)
    assert snapshot["live"] == [] and snapshot["recent"][0]["reason"] == "stop"
    await hub.close()


async def test_a_slow_subscriber_is_dropped_and_never_blocks_publish():
    hub = DashboardHub(backlog=8, status_interval=0)
    slow = hub.subscribe()  # never reads
    fast = hub.subscribe()
    received: list[dict] = []

    async def read() -> None:
        while (message := await fast.next()) is not None:
            received.append(orjson.loads(message))

    reader = asyncio.create_task(read())
    hub.publish("call_started", {"call_sid": "CA2", "caller": "", "direction": "inbound"})
    for i in range(50):
        hub.publish("turn", {"call_sid": "CA2", **_turn(i)})  # synchronous: it cannot wait on anyone
        await asyncio.sleep(0)  # let the fast reader keep up, as a live page does
    await asyncio.sleep(0.01)

    assert slow.dropped and len(slow) == 0  # its backlog was freed at once
    assert await asyncio.wait_for(slow.next(), 1.0) is None
    assert slow.gone.is_set()
    assert hub.subscribers == 1 and hub.dropped_total == 1
    assert not fast.dropped
    assert [m["type"] for m in received][:2] == ["snapshot", "call_started"]
    assert [m["turn"]["turn_id"] for m in received if m["type"] == "turn"] == list(range(50))
    reader.cancel()
    await hub.close()
    assert hub.subscribers == 0


async def test_memory_per_call_is_bounded():
    hub = DashboardHub(status_interval=0)
    hub.publish("call_started", {"call_sid": "CA3", "caller": "", "direction": "inbound"})
    for i in range(1000):
        hub.publish("turn", {"call_sid": "CA3", **_turn(i)})
    assert len(hub.live["CA3"]["turns"]) == 100
    assert hub.live["CA3"]["turns"][-1]["turn_id"] == 999
    for i in range(30):
        hub.publish("call_started", {"call_sid": f"CX{i}", "caller": "", "direction": "inbound"})
        hub.publish("call_ended", {"call_sid": f"CX{i}", "reason": "stop"})
    assert len(hub.recent) == 10


async def test_a_turn_for_an_unknown_call_starts_tracking_it():
    hub = DashboardHub(status_interval=0)
    hub.publish("turn", {"call_sid": "CA4", **_turn(3)})
    assert [t["turn_id"] for t in hub.live["CA4"]["turns"]] == [3]


async def test_status_is_pushed_only_when_it_changes():
    status = {"ready": False, "problems": {}}
    hub = DashboardHub(status=lambda: dict(status), status_interval=0.01)
    sub = hub.subscribe()
    assert (await _next(sub))["status"] == {"ready": False, "problems": {}}
    await asyncio.sleep(0.05)
    assert len(sub) == 0  # unchanged: nothing sent
    status["ready"] = True
    pushed = await _next(sub)
    assert pushed == {"type": "status", "status": {"ready": True, "problems": {}}}
    hub.unsubscribe(sub)
    assert hub._ticker is None  # nobody watching: the ticker stops
    await hub.close()


async def test_a_failing_status_does_not_break_the_feed():
    def broken() -> dict:
        raise RuntimeError("boom")

    hub = DashboardHub(status=broken, status_interval=0)
    sub = hub.subscribe()
    assert (await _next(sub))["status"] == {"error": "status unavailable"}
    await hub.close()
