"""One Starlette app serving all four emulators at their real paths, plus the control routes.

- `POST /_emulator/config`: JSON merge into the live `EmulatorConfig`; answers the whole config.
  An unknown field or a wrongly typed value is a 400 and changes nothing.
- `GET /_emulator/config`: the config.
- `GET /_emulator/log`: everything recorded, `{"deepgram": [...], "openai": [...], "elevenlabs": [...],
  "twilio": [...]}`.
- `POST /_emulator/reset`: clear the logs, the faults, the OpenAI script position and Twilio's calls.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from emulators import deepgram, elevenlabs, openai, twilio_rest
from emulators.common import TRANSPORT_KEY, EmulatorState, Receive, Scope, Send, state_of
from emulators.config import ConfigError, EmulatorConfig, EmulatorLog


class EmulatorApp(Starlette):
    """Starlette, plus the uvicorn transport in the scope so faults can cut connections for real.

    uvicorn's `send` is a bound method of the object that owns the transport; the outermost app is
    the only place that sees it unwrapped."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] in ("http", "websocket"):
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_KEY] = transport
        await super().__call__(scope, receive, send)

    @property
    def emulator(self) -> EmulatorState:
        return self.state.emulator


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def get_config(request: Request) -> Response:
    return _json(state_of(request.scope).config.to_dict())


async def post_config(request: Request) -> Response:
    state = state_of(request.scope)
    try:
        data = orjson.loads(await request.body())
        state.config.merge(data)
    except (orjson.JSONDecodeError, ConfigError) as exc:
        return _json({"error": str(exc)}, 400)
    return _json(state.config.to_dict())


async def get_log(request: Request) -> Response:
    return _json(state_of(request.scope).log.to_dict())


async def post_reset(request: Request) -> Response:
    reset(state_of(request.scope))
    return _json({"ok": True})


def reset(state: EmulatorState) -> None:
    state.log.clear()
    state.config.clear_faults()
    state.config.openai._cursor = 0
    state.twilio_calls.clear()


def build_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    config = config if config is not None else EmulatorConfig()
    tts = "/v1/text-to-speech/{voice_id}"
    account = twilio_rest.API + "/Accounts/{account_sid}"
    routes = [
        WebSocketRoute("/v1/listen", deepgram.listen),
        Route("/v1/chat/completions", openai.ChatCompletions(), methods=["POST"]),
        Route("/v1/responses", openai.Responses(), methods=["POST"]),
        Route("/v1/models", openai.Models(), methods=["GET"]),
        Route(tts + "/stream", elevenlabs.TextToSpeechHttp(streaming=True), methods=["POST"]),
        Route(tts, elevenlabs.TextToSpeechHttp(streaming=False), methods=["POST"]),
        WebSocketRoute(tts + "/stream-input", elevenlabs.stream_input),
        WebSocketRoute(tts + "/multi-stream-input", elevenlabs.multi_stream_input),
        Route(account + ".json", twilio_rest.account, methods=["GET"]),
        Route(account + "/Calls.json", twilio_rest.calls, methods=["GET", "POST"]),
        Route(account + "/Calls/{call_sid}.json", twilio_rest.call, methods=["GET", "POST"]),
        Route("/_emulator/config", get_config, methods=["GET"]),
        Route("/_emulator/config", post_config, methods=["POST"]),
        Route("/_emulator/log", get_log, methods=["GET"]),
        Route("/_emulator/reset", post_reset, methods=["POST"]),
    ]
    app = EmulatorApp(routes=routes)
    app.state.emulator = EmulatorState(config, EmulatorLog(config.log_limit))
    return app
