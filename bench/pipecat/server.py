"""Pipecat's stock Twilio pipeline, pointed at voicegate's provider emulators, for side-by-side load.

Runs in bench/pipecat/.venv (pipecat-ai 1.14.0; see setup.sh), never in voicegate's venv:

    bench/pipecat/.venv/bin/python bench/pipecat/server.py --port 8765 --emulators http://127.0.0.1:9100

`WS /ws` takes a Twilio Media Stream (what `loadgen.simcaller` sends). The pipeline is the one in
pipecat-examples `twilio-chatbot/inbound/bot.py`, with Google/Cartesia swapped for the services the
comparison needs:

    transport.input() -> DeepgramSTTService -> user aggregator (SileroVADAnalyzer; default turn
    strategies: VAD start + Smart Turn v3 stop) -> OpenAILLMService -> ElevenLabsTTSService (WebSocket,
    multi-stream-input) -> transport.output() -> assistant aggregator

Every service takes a local URL through its own constructor; nothing is patched:
- DeepgramSTTService(base_url="ws://127.0.0.1:P")  (builds a DeepgramClientEnvironment)
- OpenAILLMService(base_url="http://127.0.0.1:P/v1")
- ElevenLabsTTSService(url="ws://127.0.0.1:P")  (opens /v1/text-to-speech/{voice}/multi-stream-input)
- TwilioFrameSerializer(params=InputParams(auto_hang_up=False)): the simulated caller hangs up
  itself, and voicegate under the same bench makes no REST call either.

Differences from the stock example, each for the measurement: no AudioBufferProcessor (it records
the whole call in memory, a demo feature), no Twilio REST lookup of the caller, loguru at INFO
instead of the runner's DEBUG (voicegate runs at INFO too). `GET /healthz` answers once the Silero
and Smart Turn models load (both ship inside the pipecat wheel: no download).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

SYSTEM_PROMPT = ("You are the phone receptionist of a small clinic. You book appointments. Plain spoken English, "
                 "at most two short sentences.")
VOICE_ID = "21m00Tcm4TlvDq8ikWAM"  # voicegate's default ElevenLabs voice; the emulator accepts any

app = FastAPI()
EMULATORS = os.environ.get("EMULATORS_URL", "http://127.0.0.1:9100").rstrip("/")
ACTIVE = {"calls": 0, "total": 0, "failed": 0}


def _ws(url: str) -> str:
    return "ws" + url[len("http"):] if url.startswith("http") else url


async def run_bot(websocket: WebSocket) -> None:
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False,
                                      serializer=serializer),
    )
    stt = DeepgramSTTService(api_key="dg-bench", base_url=_ws(EMULATORS))
    llm = OpenAILLMService(api_key="sk-bench", base_url=EMULATORS + "/v1",
                           settings=OpenAILLMService.Settings(model="gpt-4o-mini", system_instruction=SYSTEM_PROMPT))
    tts = ElevenLabsTTSService(api_key="xi-bench", url=_ws(EMULATORS),
                               settings=ElevenLabsTTSService.Settings(voice=VOICE_ID, model="eleven_flash_v2_5"))
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator])
    task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000,
                                                        enable_metrics=True, enable_usage_metrics=True))

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        context.add_message({"role": "user", "content": "Please introduce yourself to the caller."})
        await task.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await task.cancel()

    await PipelineRunner(handle_sigint=False, force_gc=False).run(task)


@app.websocket("/ws")
async def media_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    ACTIVE["calls"] += 1
    ACTIVE["total"] += 1
    try:
        await run_bot(websocket)
    except Exception:
        ACTIVE["failed"] += 1
        logger.exception("call failed")
    finally:
        ACTIVE["calls"] -= 1


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok", **ACTIVE}


def main() -> int:
    global EMULATORS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--emulators", default=os.environ.get("EMULATORS_URL", "http://127.0.0.1:9100"))
    p.add_argument("--log-level", default=os.environ.get("PIPECAT_LOG_LEVEL", "INFO"))
    args = p.parse_args()
    EMULATORS = args.emulators.rstrip("/")
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    # Load the bundled ONNX models once before the first call (the runner's example does the same
    # at import); a fresh analyzer per call then reuses the process-wide onnxruntime.
    SileroVADAnalyzer()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws_max_size=16 * 1024 * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
