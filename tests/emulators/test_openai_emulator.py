"""The OpenAI emulator driven by the real openai 3.51 client (PROTOCOLS.md §2)."""

from __future__ import annotations

import time

import openai
import orjson
import pytest
from openai import AsyncOpenAI

from emulators.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "system", "content": "You book appointments."}, {"role": "user", "content": "Hi, can I book?"}]
TOOLS = [{"type": "function", "function": {
    "name": "transfer_call", "description": "Transfer the caller",
    "parameters": {"type": "object", "properties": {"department": {"type": "string"}}}}}]


def client(emu: EmulatorServer, **kw: object) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-test", base_url=emu.url + "/v1", **{"timeout": 10.0, "max_retries": 0, **kw})


async def test_streamed_text_arrives_token_by_token(emu: EmulatorServer) -> None:
    reply = "Hello there, how can I help you today?"
    emu.config.merge({"openai": {"script": [reply]}, "llm_first_token": 0.2, "llm_token_rate": 100.0})
    async with client(emu) as oa:
        started = time.monotonic()
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                  stream_options={"include_usage": True}, max_tokens=100)
        chunks = []
        arrivals = []
        async for chunk in stream:
            chunks.append(chunk)
            arrivals.append(time.monotonic() - started)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents[:4] == ["Hello", " there", ",", " how"]
    assert "".join(contents) == reply
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(contents)
    assert arrivals[0] >= 0.2  # llm_first_token

    record = emu.log.openai[-1]
    assert record["model"] == "gpt-4o-mini" and record["stream"] is True and record["max_tokens"] == 100
    assert record["body"]["messages"] == MESSAGES
    assert record["headers"]["authorization"] is True and record["headers"]["x-stainless-retry-count"] == "0"
    assert record["tokens_sent"] == len(contents)
    assert record["first_token_at"] >= record["t"] + 0.2
    # llm_token_rate, measured where it is produced (arrivals at a busy client may bunch up).
    assert record["last_chunk_at"] - record["first_token_at"] >= 0.5 * (len(contents) - 1) / 100.0


async def test_streamed_tool_call_reassembles(emu: EmulatorServer) -> None:
    args = {"department": "billing", "reason": "refund for last month"}
    emu.config.merge({"openai": {"script": [{"tool": "transfer_call", "arguments": args}, "Transferring you now."]}})
    async with client(emu) as oa:
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, tools=TOOLS)
        pieces: dict[int, dict[str, str]] = {}
        finish = None
        argument_chunks = 0
        async for chunk in stream:
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = pieces.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += tc.id or ""
                slot["name"] += (tc.function.name or "") if tc.function else ""
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
                    argument_chunks += 1
        assert finish == "tool_calls"
        assert pieces[0]["name"] == "transfer_call" and pieces[0]["id"].startswith("call_")
        assert orjson.loads(pieces[0]["arguments"]) == args
        assert argument_chunks > 3
        # The next script entry answers the tool result, as text.
        done = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
        assert done.choices[0].message.content == "Transferring you now."
    assert emu.log.openai[0]["tools"] == TOOLS


async def test_non_streamed_completion_and_rules(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"rules": {"tuesday": "Tuesday at 3 works."}, "default_reply": "Okay."}})
    async with client(emu) as oa:
        r1 = await oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Next Tuesday?"}])
        r2 = await oa.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_completion_tokens=20)
        models = await oa.models.list()
    assert r1.choices[0].message.content == "Tuesday at 3 works." and r1.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content == "Okay."
    assert emu.log.openai[1]["max_completion_tokens"] == 20
    assert "gpt-4o-mini" in [m.id for m in models.data]


async def test_rate_limit_and_retry_after(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "error429", "fault_count": 1, "retry_after": 0.3}})
    async with client(emu) as oa:
        with pytest.raises(openai.RateLimitError) as info:
            await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after-ms"] == "300"
        emu.config.merge({"openai": {"fault": "error429", "fault_count": 1}})
        retrying = oa.with_options(max_retries=1)
        reply = await retrying.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == emu.config.openai.default_reply
    first, second = list(emu.log.openai)[-2:]
    assert (first["status"], second["status"]) == (429, 200)
    assert second["headers"]["x-stainless-retry-count"] == "1"
    assert second["t"] - first["t"] >= 0.29  # the client waited retry-after


async def test_server_error_and_bad_key(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "error500", "fault_count": 1, "bad_keys": ["sk-bad"]}})
    async with client(emu) as oa:
        with pytest.raises(openai.InternalServerError):
            await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    async with AsyncOpenAI(api_key="sk-bad", base_url=emu.url + "/v1", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()


async def test_midstream_error_raises_api_error_after_some_tokens(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "midstream", "fault_after_tokens": 3,
                                 "default_reply": "One two three four five six."}})
    got = []
    async with client(emu) as oa:
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
    assert type(info.value) is openai.APIError and "overloaded" in info.value.message
    assert got == ["One", " two", " three"]


async def test_stall_times_out_the_client(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "stall"}})
    async with client(emu, timeout=0.5) as oa:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            async for _ in stream:
                pass
        assert time.monotonic() - started < 3


async def test_drop_cuts_the_stream(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "drop", "fault_after_tokens": 2}})
    got = []
    async with client(emu) as oa:
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):  # the socket died mid-body
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
    assert got == ["Sure", ","]


async def test_responses_api_text_and_function_call(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"script": ["Hi! What day suits you?",
                                            {"tool": "transfer_call", "arguments": {"department": "sales"}}]}})
    tools = [{"type": "function", "name": "transfer_call", "strict": False,
              "parameters": {"type": "object", "properties": {"department": {"type": "string"}}}}]
    async with client(emu) as oa:
        async with oa.responses.stream(model="gpt-4o-mini", input="Hello") as s:
            deltas = [e.delta async for e in s if e.type == "response.output_text.delta"]
            final = await s.get_final_response()
        assert final.output_text == "Hi! What day suits you?" == "".join(deltas)
        events = [e async for e in await oa.responses.create(model="gpt-4o-mini", input="Transfer me",
                                                             tools=tools, stream=True)]
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    (call,) = events[-1].response.output
    assert call.type == "function_call" and call.name == "transfer_call"
    assert orjson.loads(call.arguments) == {"department": "sales"}


async def _raw_chunks(oa: AsyncOpenAI, **kw: object) -> list:
    stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kw)
    return [chunk async for chunk in stream]


async def test_tool_call_deltas_stream_as_openai_sends_them(emu: EmulatorServer) -> None:
    args = {"date": "2026-11-24", "time": "15:00", "intent": "provide_both"}
    emu.config.merge({"openai": {"script": [{"tool": "transfer_call", "arguments": args}]}})
    async with client(emu) as oa:
        chunks = await _raw_chunks(oa, tools=TOOLS)
    first = chunks[0].choices[0].delta
    # A call with no text: the role, a null content and the call's id and name in the first delta.
    assert first.role == "assistant" and first.content is None
    (head,) = first.tool_calls
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "transfer_call" and head.function.arguments == ""
    later = [tc for c in chunks[1:] if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert all(tc.id is None and tc.function.name is None and tc.index == 0 for tc in later)
    pieces = [tc.function.arguments for tc in later]
    assert len(pieces) > 3 and orjson.loads("".join(pieces)) == args
    for piece in pieces:  # each piece is a fragment, not a document
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(piece)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)


async def test_text_and_tool_call_in_one_response_scripted_by_rule(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"rules": {
        "billing": {"text": "Okay, one moment.", "tool": "transfer_call", "arguments": {"department": "billing"}},
        "hours": "We open at nine."}}})
    asked = [{"role": "user", "content": "Can I talk to BILLING please"}]
    async with client(emu) as oa:
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=asked, stream=True, tools=TOOLS)
        chunks = [chunk async for chunk in stream]
        # The same rule without tools on offer: the model can only speak.
        plain = await oa.chat.completions.create(model="gpt-4o-mini", messages=asked)
        hours = await oa.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "what are your hours?"}, {"role": "system", "content": "be brief"}],
            tools=TOOLS)
    kinds = ["text" if c.choices[0].delta.content else "tool" if c.choices[0].delta.tool_calls else "-"
             for c in chunks if c.choices]
    # Text first, then the call; never text after the call has started.
    assert "text" in kinds and "tool" in kinds and kinds.index("tool") > max(i for i, k in enumerate(kinds) if k == "text")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Okay, one moment."
    heads = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or [] if tc.id]
    assert len(heads) == 1 and heads[0].function.name == "transfer_call"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert plain.choices[0].message.content == "Okay, one moment." and plain.choices[0].message.tool_calls is None
    assert hours.choices[0].message.content == "We open at nine." and hours.choices[0].finish_reason == "stop"


async def test_midstream_failure_inside_the_tool_arguments(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "midstream", "fault_after_tokens": 2, "script": [
        {"tool": "transfer_call", "arguments": {"department": "billing", "reason": "a long reason"}}]}})
    got = ""
    async with client(emu) as oa:
        stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, tools=TOOLS)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    got += tc.function.arguments or ""
    assert got and len(got) == 2 * 8  # two pieces of arguments, then the error: never a whole call
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(got)


def test_malformed_scripted_replies_are_refused() -> None:
    from emulators.config import ConfigError, EmulatorConfig

    cfg = EmulatorConfig()
    for bad in ({"rules": {"x": {"tool": "t", "argument": {}}}}, {"rules": {"x": 3}},
                {"script": [{"tool": ["t"]}]}, {"script": [{"tool": "t", "arguments": [1]}]}, {"rules": ["x"]}):
        with pytest.raises(ConfigError):
            cfg.merge({"openai": bad})
    assert cfg.openai.rules == {} and cfg.openai.script == []
    cfg.merge({"openai": {"rules": {"x": {"tool": "t", "arguments": '{"a": 1}', "text": "Ok."}, "y": "Hi."}}})
    assert list(cfg.openai.rules) == ["x", "y"]
