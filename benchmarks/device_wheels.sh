#!/usr/bin/env bash
# The wheels a GPU machine of the device tool lacks (its image has torch, numpy, scipy, scikit-learn, matplotlib,
# pillow, pyyaml, typer and rich; not pydantic, MONAI or pydicom), downloaded into .whl/ (ignored by git) for its
# Python 3.12, at the versions this checkout's .venv holds (else the newest). Then, with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 && bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
PY=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
for name in pydantic pydantic_core annotated_types typing_inspection monai pydicom; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${name//_/-}${version:+==$version}"
done
ls -l .whl
