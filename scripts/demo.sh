#!/usr/bin/env bash
# Set up medablate and run the course study on the embedded (synthetic) phantom data, 5 epochs per trial.
# Extra arguments go to `medablate run`, e.g. --set training.epochs=40 or --set data.path=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/medablate run examples/course-hw2.yaml --set training.epochs=5 "$@"
