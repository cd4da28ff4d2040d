#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtual environment with every dependency in .venv/.
#   bash scripts/setup.sh                 app and engine (requirements.txt)
#   bash scripts/setup.sh --with-browser  also the test tools (requirements-test.txt) and Debian's
#                                         chromium + chromium-driver (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements.txt
if [ "${1:-}" = "--with-browser" ]; then
  .venv/bin/python -m pip install -q -r requirements-test.txt
fi
if [ "${1:-}" = "--with-browser" ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
  # emoji glyphs for screenshots (the play/pause labels); cosmetic, so a failure is not fatal
  $SUDO apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1 || true
fi
