#!/usr/bin/env bash
# Set up medablate and run the fast test suite (add -m slow for the long tests, or any pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
