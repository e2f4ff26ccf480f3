#!/usr/bin/env bash
# Create bench/pipecat/.venv: Pipecat in its OWN virtualenv, never a dependency of voicegate.
#
#   bash bench/pipecat/setup.sh            # idempotent; re-run to repair
#   PYTHON=python3.12 bash bench/pipecat/setup.sh
#
# Pinned to pipecat-ai 1.14.0 with the extras the Twilio pipeline needs: Deepgram STT, OpenAI LLM,
# ElevenLabs TTS (WebSocket), Silero VAD (the ONNX model ships inside the wheel: no download at run
# time), and the FastAPI WebSocket transport.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    # The same interpreter as voicegate's venv when there is one, so both run on one Python.
    main_cfg="$here/../../.venv/pyvenv.cfg"
    if [[ -f "$main_cfg" ]]; then
        python="$(sed -n 's/^executable = //p' "$main_cfg")"
    fi
    python="${python:-python3}"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
    "pipecat-ai[deepgram,openai,elevenlabs,silero,websocket]==1.14.0" \
    "uvicorn>=0.30" "uvloop>=0.19" "httptools>=0.6" "fastapi>=0.110" "psutil>=5.9"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import pathlib
import pipecat
print("pipecat-ai", md.version("pipecat-ai"))
models = sorted(p.name for p in pathlib.Path(pipecat.__file__).parent.rglob("*.onnx"))
print("bundled onnx models:", models)
if not any("silero" in m for m in models):
    raise SystemExit("the silero VAD model is not inside the pipecat wheel")
PY
