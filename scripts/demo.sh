#!/usr/bin/env bash
# Run the whole pipeline on tiny random-weight models (output is noise) and write an mp4: the main job's smoke run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m wan.generate --demo --save_file output/wan_demo.mp4 "$@"
