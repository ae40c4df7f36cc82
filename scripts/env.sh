#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv and install what the tests need.
# Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WAN_EXPERTS_VENV:-$ROOT/.venv}"
STAMP="$VENV/.installed-$(cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" | sha1sum | cut -c1-12)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements-test.txt"
  # The official Wan code, used only as a test oracle. It lists flash_attn, which needs CUDA: skip its deps.
  "$VENV/bin/python" -m pip install --quiet --no-deps "wan22==2.2.11"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
PY="$VENV/bin/python"
export PY ROOT
