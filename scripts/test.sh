#!/usr/bin/env bash
# Run the whole test suite in the project's own virtual environment (created on first use).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
