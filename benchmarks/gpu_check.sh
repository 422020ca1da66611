#!/usr/bin/env bash
# One-command GPU check (issue 11), under 5 minutes on an H100-class GPU:
#   bash benchmarks/gpu_check.sh
# 1. the course study, 1 seed x 6 trials x 40 epochs: --workers 1 vs --workers auto (wall, phases, summed
#    training, fixed cost per run, identical numbers);
# 2. the 30-run course study (5 seeds) with --workers auto: the target is under 2 minutes;
# 3. the course notebook's own loop vs medablate's Trainer, seconds per epoch on the same card;
# 4. benchmarks/models.py: every registered model, fp32 vs the speed switches.
# Needs medablate importable (bash scripts/setup.sh; on a machine without internet, pip install --no-index
# --find-links WHEELS -e . first). Figures go to stdout; set GPU_CHECK_EPOCHS to shorten.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
EPOCHS=${GPU_CHECK_EPOCHS:-40}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CPU cores', __import__('os').cpu_count())"
echo "== 1. course study, 1 seed, $EPOCHS epochs: --workers 1 vs auto"
"$PY" benchmarks/study_time.py --epochs "$EPOCHS" --seeds 1 --configs sequential,auto
echo "== 2. course study, 5 seeds = 30 runs, $EPOCHS epochs, --workers auto (target: under 120 s)"
"$PY" benchmarks/study_time.py --epochs "$EPOCHS" --seeds 5 --configs auto
echo "== 3. seconds per epoch, the notebook's loop vs medablate's, on this GPU"
"$PY" benchmarks/epoch_time.py --device cuda --epochs 10
echo "== 4. every registered model at 128 and 224 px: fp32, channels-last, bf16 (issue 10)"
"$PY" benchmarks/models.py --device cuda --batches 20
