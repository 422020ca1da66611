#!/usr/bin/env bash
# Create .venv (once) and install medablate into it. Safe to run again.
# `bash scripts/setup.sh test` also installs what the tests and .ci/run need (pytest, playwright, tensorboard, ray, onnx,
# onnxruntime, mlflow-skinny, import-linter, ruff, mypy).
# torch is installed first from the pinned CPU wheel so that pip never pulls a multi-GB CUDA build;
# any torch>=2.4 already in the venv (e.g. a CUDA build on a GPU machine) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q "torch==${MEDABLATE_TORCH_VERSION:-2.13.0}"
fi
if [ "${1:-}" = "test" ]; then
    "$VPY" -m pip install -q -e ".[test]"
else
    "$VPY" -m pip install -q -e .
fi
