"""OpenAI emulator: Chat Completions and Responses, streamed or not (PROTOCOLS.md §2).

Routes: `POST /v1/chat/completions`, `POST /v1/responses`, `GET /v1/models` (a cheap auth probe).

What to answer: the first matching `rules` entry (a substring of the last user message), else the
next `script` entry (in order, per server), else `default_reply`. An entry is a reply text or a
tool call `{"tool": name, "arguments": {...}, "text": optional content before the call}`; a tool
call is only made when the request offers tools. So a test or a benchmark scripts what the model
does per caller line (speak, call the tool, or both) with a rule table (`--llm-rules FILE`, or
`{"openai": {"rules": ...}}` through `POST /_emulator/config`). Chat Completions streams a call
as OpenAI does: the id and name in the call's first delta, the arguments JSON split across chunks
(`ARGUMENT_PIECE` characters each), after any text, and `finish_reason` "tool_calls". The reply is split into word-ish tokens
("Hello", " there", ",") sent `llm_first_token` seconds after the request and then at
`llm_token_rate` tokens/s; tool-call arguments are split into pieces on the same clock.

Faults: error500, error429 (retry-after and retry-after-ms headers), midstream (an error payload
after `fault_after_tokens` tokens), stall (headers, then nothing), drop (TCP cut mid-stream).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from emulators.arrival import received_at
from emulators.common import (
    EmulatorState,
    Receive,
    Scope,
    Send,
    abort_connection,
    end_stream,
    header,
    hold,
    loop_time_at,
    now,
    read_body,
    send_chunk,
    send_json,
    sleep_until,
    start_stream,
    state_of,
)

_TOKEN = re.compile(r"\s*[\w']+|\s*[^\w\s]+|\s+")
ARGUMENT_PIECE = 8  # characters of tool-call arguments per chunk: about a token of JSON, as OpenAI sends them
SYSTEM_FINGERPRINT = "fp_emu"


def tokenize(text: str) -> list[str]:
    """Word-ish tokens that concatenate back to `text`: "Hello, there" -> ["Hello", ",", " there"]."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool: str | None = None
    arguments: str = ""
    call_id: str = ""

    def pieces(self) -> list[tuple[str, str]]:
        """The streamed pieces in order: ("text", token) then ("args", fragment)."""
        out = [("text", tok) for tok in tokenize(self.text)]
        if self.tool is not None:
            args = self.arguments
            pieces = [("args", args[i : i + ARGUMENT_PIECE]) for i in range(0, len(args), ARGUMENT_PIECE)]
            out += pieces or [("args", "")]
        return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    items = body.get("messages")
    if items is None:
        items = body.get("input")
        if isinstance(items, str):
            return items
    for item in reversed(items or []):
        if isinstance(item, dict) and item.get("role") == "user":
            return _content_text(item.get("content"))
    return ""


def choose_reply(state: EmulatorState, body: dict[str, Any]) -> Reply:
    oa = state.config.openai
    entry: Any = None
    user = last_user_text(body).lower()
    for pattern, candidate in oa.rules.items():
        if pattern.lower() in user:
            entry = candidate
            break
    if entry is None:
        entry = oa.next_scripted()
    if entry is None:
        entry = oa.default_reply
    if isinstance(entry, dict):
        text = str(entry.get("text") or "")
        if entry.get("tool") and body.get("tools"):
            args = entry.get("arguments", {})
            args_text = args if isinstance(args, str) else orjson.dumps(args).decode()
            return Reply(text, str(entry["tool"]), args_text, "call_" + uuid.uuid4().hex[:24])
        return Reply(text or oa.default_reply)
    return Reply(str(entry))


def _count_tokens(body: dict[str, Any]) -> int:
    return max(1, len(orjson.dumps(body.get("messages") or body.get("input") or "")) // 4)


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


class _Endpoint:
    """Shared request handling: auth, faults, logging, then `generate` for the body."""

    path = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = state_of(scope)
        oa = state.config.openai
        record = state.log.add("openai", {
            "path": scope["path"], "t": received_at(scope), "headers": {
                "authorization": header(scope, b"authorization") is not None,
                "x-stainless-retry-count": header(scope, b"x-stainless-retry-count"),
                "user-agent": header(scope, b"user-agent"),
            },
            "body": None, "model": None, "stream": None, "tools": None, "max_tokens": None,
            "max_completion_tokens": None, "status": None, "fault": None, "reply": None,
            "first_token_at": None, "last_chunk_at": None, "tokens_sent": 0,
            "token_at": [],  # when each streamed token went out (benchmarks time the client's hops)
        })

        async def fail(status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            record["status"] = status
            await send_json(send, status, body, headers)
            record["last_chunk_at"] = now()

        auth = header(scope, b"authorization") or ""
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not oa.key_accepted(key.strip(), oa.api_key, oa.bad_keys):
            return await fail(401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        if scope["method"] == "GET":
            return await self.get(scope, send, state, record)
        try:
            body = orjson.loads(await read_body(receive))
        except (orjson.JSONDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            return await fail(400, _error("We could not parse the JSON body of your request.",
                                          "invalid_request_error", None))
        record.update(body=body, model=body.get("model"), stream=bool(body.get("stream")), tools=body.get("tools"),
                      max_tokens=body.get("max_tokens"), max_completion_tokens=body.get("max_completion_tokens"))
        fault = record["fault"] = oa.take_fault()
        if fault == "error500":
            return await fail(500, _error("The server had an error while processing your request. Sorry about that!",
                                          "server_error", None))
        if fault == "error429":
            return await fail(429, _error("Rate limit reached for requests. Please try again later.",
                                          "requests", "rate_limit_exceeded"),
                              {"retry-after": f"{oa.retry_after:g}", "retry-after-ms": str(int(oa.retry_after * 1000)),
                               "x-ratelimit-remaining-requests": "0"})
        reply = choose_reply(state, body)
        record["reply"] = {"text": reply.text, "tool": reply.tool, "arguments": reply.arguments or None}
        await self.generate(scope, receive, send, state, record, body, reply, fault)

    async def get(self, scope: Scope, send: Send, state: EmulatorState, record: dict[str, Any]) -> None:
        record["status"] = 405
        await send_json(send, 405, _error("Method not allowed.", "invalid_request_error", None))

    async def generate(self, scope: Scope, receive: Receive, send: Send, state: EmulatorState,
                       record: dict[str, Any], body: dict[str, Any], reply: Reply, fault: str | None) -> None:
        raise NotImplementedError

    @staticmethod
    def _limit(body: dict[str, Any], reply: Reply) -> tuple[Reply, bool]:
        """Cut the reply text to max_tokens / max_completion_tokens / max_output_tokens."""
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        tokens = tokenize(reply.text)
        if isinstance(limit, int) and 0 < limit < len(tokens):
            return Reply("".join(tokens[:limit])), True
        return reply, False

    async def _paced(self, scope: Scope, receive: Receive, send: Send, state: EmulatorState, record: dict[str, Any],
                     events: Iterator[tuple[bytes, bool]], fault: str | None, error_event: bytes,
                     total_tokens: int) -> None:
        """Send SSE events; a True flag marks an event that carries a token and takes a slot on
        the token clock. Applies the stall / midstream / drop faults."""
        cfg = state.config
        oa = cfg.openai
        loop = asyncio.get_running_loop()
        start = loop_time_at(record["t"]) + cfg.llm_first_token  # from the request's arrival
        step = 1.0 / cfg.llm_token_rate if cfg.llm_token_rate > 0 else 0.0
        record["status"] = 200
        await start_stream(send, 200, "text/event-stream; charset=utf-8",
                           {"cache-control": "no-cache", "x-request-id": "req_" + uuid.uuid4().hex})
        if fault == "stall":
            await hold(receive, state, oa.stall_seconds)
            return
        # A reply shorter than fault_after_tokens still fails, before its last token.
        fail_at = min(oa.fault_after_tokens, max(total_tokens - 1, 0))
        tokens = 0
        pending: list[bytes] = []
        for data, is_token in events:
            if is_token:
                if tokens == fail_at and fault in ("midstream", "drop"):
                    if pending:
                        await send_chunk(send, b"".join(pending))
                    if fault == "drop":
                        if await abort_connection(scope, receive):
                            return
                        raise ConnectionAbortedError("emulated drop")
                    await send_chunk(send, error_event)
                    record["last_chunk_at"] = now()
                    await end_stream(send)
                    return
                await sleep_until(start + tokens * step)
                pending.append(data)
                sent_at = now()
                await send_chunk(send, b"".join(pending))
                pending.clear()
                if tokens == 0 and loop.time() - start > step:
                    # A first token more than a token late (a busy loop) restarts the token clock
                    # rather than turn into a burst of catch-up tokens. Less than that stays on
                    # the clock: the next token comes on time, not a whole timer's lateness later.
                    start = loop.time()
                tokens += 1
                record["tokens_sent"] = tokens
                record["token_at"].append(sent_at)
                if record["first_token_at"] is None:
                    record["first_token_at"] = record["token_at"][0]
            else:
                pending.append(data)
        if pending:
            await sleep_until(start + max(tokens - 1, 0) * step)
            await send_chunk(send, b"".join(pending))
        record["last_chunk_at"] = now()
        await end_stream(send)

    @staticmethod
    async def _wait_generation(state: EmulatorState, receive: Receive, reply: Reply, fault: str | None) -> bool:
        """Non-streaming: wait as long as generating the whole reply would take. False on a stall."""
        cfg = state.config
        if fault == "stall":
            await hold(receive, state, cfg.openai.stall_seconds)
            return False
        n = len(reply.pieces())
        rate = cfg.llm_token_rate if cfg.llm_token_rate > 0 else float("inf")
        await asyncio.sleep(cfg.llm_first_token + max(n - 1, 0) / rate)
        return True


class ChatCompletions(_Endpoint):
    async def generate(self, scope: Scope, receive: Receive, send: Send, state: EmulatorState,
                       record: dict[str, Any], body: dict[str, Any], reply: Reply, fault: str | None) -> None:
        reply, cut = self._limit(body, reply)
        finish = "length" if cut else ("tool_calls" if reply.tool else "stop")
        model = str(body.get("model") or "gpt-4o-mini")
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        prompt_tokens = _count_tokens(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.pieces()),
                 "total_tokens": prompt_tokens + len(reply.pieces()),
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        if not body.get("stream"):
            if not await self._wait_generation(state, receive, reply, fault):
                return
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None,
                                       "annotations": []}
            if reply.tool:
                message["tool_calls"] = [{"id": reply.call_id, "type": "function",
                                          "function": {"name": reply.tool, "arguments": reply.arguments}}]
            record["status"] = 200
            record["first_token_at"] = record["last_chunk_at"] = now()
            record["tokens_sent"] = len(reply.pieces())
            await send_json(send, 200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT, "service_tier": "default",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            })
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "system_fingerprint": SYSTEM_FINGERPRINT,
                         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def events() -> Iterator[tuple[bytes, bool]]:
            # As OpenAI streams a call: its id and name once, in the call's first delta (with the role
            # when no text came before it), then the arguments JSON in pieces that are not valid JSON
            # on their own; the client merges them by `index`. Text, if any, comes first.
            head = {"index": 0, "id": reply.call_id, "type": "function",
                    "function": {"name": reply.tool, "arguments": ""}}
            if reply.text or not reply.tool:
                yield chunk({"role": "assistant", "content": "", "refusal": None}), False
            else:
                yield chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}), False
            for kind, piece in reply.pieces():
                if kind == "text":
                    yield chunk({"content": piece}), True
                    continue
                if head is not None and reply.text:
                    yield chunk({"tool_calls": [head]}), False  # goes out with the first piece of arguments
                head = None
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), True
            yield chunk({}, finish), False
            if include_usage:
                yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [], "usage": usage}), False
            yield b"data: [DONE]\n\n", False

        await self._paced(scope, receive, send, state, record, events(), fault,
                          _sse({"error": {"message": "overloaded", "type": "server_error", "param": None,
                                          "code": None}}), len(reply.pieces()))


class Responses(_Endpoint):
    async def generate(self, scope: Scope, receive: Receive, send: Send, state: EmulatorState,
                       record: dict[str, Any], body: dict[str, Any], reply: Reply, fault: str | None) -> None:
        reply, cut = self._limit(body, reply)
        model = str(body.get("model") or "gpt-4o-mini")
        rid = "resp_" + uuid.uuid4().hex
        msg_id = "msg_" + uuid.uuid4().hex
        fc_id = "fc_" + uuid.uuid4().hex
        input_tokens = _count_tokens(body)
        n_out = len(reply.pieces())
        base: dict[str, Any] = {
            "id": rid, "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "background": False, "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "model": model, "output": [],
            "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": None, "user": None, "metadata": {},
        }
        message_done = {"id": msg_id, "type": "message", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}]}
        call_done = {"id": fc_id, "type": "function_call", "status": "completed", "call_id": reply.call_id,
                     "name": reply.tool, "arguments": reply.arguments}
        output: list[dict[str, Any]] = ([message_done] if reply.text or not reply.tool else []) + (
            [call_done] if reply.tool else [])
        completed = dict(base, status="incomplete" if cut else "completed", output=output,
                         incomplete_details={"reason": "max_output_tokens"} if cut else None,
                         usage={"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                                "output_tokens": n_out, "output_tokens_details": {"reasoning_tokens": 0},
                                "total_tokens": input_tokens + n_out})
        if not body.get("stream"):
            if not await self._wait_generation(state, receive, reply, fault):
                return
            record["status"] = 200
            record["first_token_at"] = record["last_chunk_at"] = now()
            record["tokens_sent"] = n_out
            await send_json(send, 200, completed)
            return

        seq = 0

        def ev(kind: str, **fields: Any) -> bytes:
            nonlocal seq
            data = {"type": kind, "sequence_number": seq, **fields}
            seq += 1
            return _sse(data, kind)

        def events() -> Iterator[tuple[bytes, bool]]:
            yield ev("response.created", response=base), False
            yield ev("response.in_progress", response=base), False
            index = 0
            if reply.text or not reply.tool:
                yield ev("response.output_item.added", output_index=0, item={
                    "id": msg_id, "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}), False
                yield ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                         part={"type": "output_text", "text": "", "annotations": [], "logprobs": []}), False
                for tok in tokenize(reply.text):
                    yield ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0,
                             delta=tok, logprobs=[]), True
                yield ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0,
                         text=reply.text, logprobs=[]), False
                yield ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0,
                         part=message_done["content"][0]), False
                yield ev("response.output_item.done", output_index=0, item=message_done), False
                index = 1
            if reply.tool:
                yield ev("response.output_item.added", output_index=index, item={
                    "id": fc_id, "type": "function_call", "status": "in_progress", "call_id": reply.call_id,
                    "name": reply.tool, "arguments": ""}), False
                for kind, piece in reply.pieces():
                    if kind == "args":
                        yield ev("response.function_call_arguments.delta", item_id=fc_id, output_index=index,
                                 delta=piece), True
                yield ev("response.function_call_arguments.done", item_id=fc_id, output_index=index,
                         name=reply.tool, arguments=reply.arguments), False
                yield ev("response.output_item.done", output_index=index, item=call_done), False
            yield ev("response.incomplete" if cut else "response.completed", response=completed), False

        # The Responses API reports a mid-stream failure as an `error` event (not an `error` key).
        error_event = _sse({"type": "error", "code": "server_error", "message": "overloaded", "param": None,
                            "sequence_number": 10_000}, "error")
        await self._paced(scope, receive, send, state, record, events(), fault, error_event, n_out)


class Models(_Endpoint):
    async def get(self, scope: Scope, send: Send, state: EmulatorState, record: dict[str, Any]) -> None:
        record["status"] = 200
        created = 1_700_000_000
        await send_json(send, 200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "emulator"}
            for m in state.config.openai.models]})
