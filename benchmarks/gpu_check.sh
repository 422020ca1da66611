#!/usr/bin/env bash
# One-command GPU check (issues 11 and 20), at most 6 minutes on an H100/H200: every part has its own time limit
# and prints as it goes, so a part cut short still says how far it got (and the next part runs).
#   bash benchmarks/gpu_check.sh
# 0. fused seeds vs one after another: the course MLP's 5 seeds, seconds per epoch and the loss differences;
# 0b. a fused step of those 5 seeds: milliseconds, and the operators and kernel launches it makes from Python;
# 1a. the course study's phantom drawn once into the decode cache (the studies after it read it: setup 3 s at most);
# 1b. the 30-run course study (5 seeds x 6 trials x 40 epochs), each trial's 5 seeds fused (training.fuse_seeds
#    auto, on a GPU), the 6 fused groups side by side (--workers auto), the runs' figures drawn by helper processes
#    while they train: wall time and phases (target: 60 s including figures, analysis and report; every phase at
#    most as long as the runs phase);
# 2. the course notebook's own loop vs medablate's Trainer, seconds per epoch on this card;
# 3. the pneumonia-cnn recipe's base trial (128 px, 3724 phantom training images, 30 epochs): 1 seed, then 3 seeds
#    side by side, a worker each (--workers auto; convolutional seeds measured no faster fused) (target: 3 seeds in
#    at most 1.5x the wall time of one);
# 4. a 3-seed recipe study of 2 architectures (cnn vs MONAI resnet18, 5 epochs);
# 5. (only when GPU_CHECK_PARTS names it) where training waits for the card, by place (benchmarks/waits.py).
# Each target is judged where it is measured: a line "target, ...: met" or "MISSED" (part 1b: the table's last two
# columns). Needs medablate importable (bash scripts/setup.sh; on a machine without internet, its missing packages as
# wheels: benchmarks/device_wheels.sh fetches them for the device tool's H200 and says how to install them there, one
# command with this script). Figures go to stdout; GPU_CHECK_SCALE=0.5 halves every time limit;
# GPU_CHECK_PARTS="3b 4" runs only those parts ("1a 1b": part 1).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SCALE=${GPU_CHECK_SCALE:-1}
DEVICE=${GPU_CHECK_DEVICE:-cuda}  # cpu: try the script's mechanics on a machine without a GPU
OUT=$(mktemp -d /tmp/gpu-check-XXXXXX)
started=$SECONDS

limit() { "$PY" -c "print(max(5, int($1 * $SCALE)))"; }
PARTS=${GPU_CHECK_PARTS:-}  # e.g. "3b 4": only those parts (by the number their name starts with)
part() {  # part NAME SECONDS COMMAND...: run it under its limit (a shell function too); say so when the limit cut it
    local name=$1 seconds; seconds=$(limit "$2"); shift 2
    if [ -n "$PARTS" ] && [[ " $PARTS " != *" ${name%%.*} "* ]]; then return 0; fi
    echo "== $name (limit ${seconds} s; ${SECONDS} s since start)"
    local t0=$SECONDS
    if declare -F "$1" >/dev/null; then  # timeout runs programs: a function goes through bash, with its helpers
        timeout -s TERM -k 10 "$seconds" bash -c "$(declare -f recipe reached against cut); $1 \"\$@\"" _ "${@:2}"
    else
        timeout -s TERM -k 10 "$seconds" "$@"
    fi
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "-- $name: stopped at its limit after $((SECONDS - t0)) s"
    elif [ $rc -ne 0 ]; then
        echo "-- $name: failed (exit $rc) after $((SECONDS - t0)) s"
    else
        echo "-- $name: $((SECONDS - t0)) s"
    fi
}
reached() {  # reached OUT: the study's runs and phases so far, from its folder
    "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    info = json.loads((out / "study.json").read_text())
except (OSError, ValueError):
    print("   no study.json yet (still in setup)")
    raise SystemExit(0)
done = sum((d / "metrics.json").exists() for d in (out / "trials").iterdir()) if (out / "trials").is_dir() else 0
timing = info.get("timing_seconds") or {}
print(f"   {done} of {info['runs']} run(s) finished, status {info['status']}; phases: "
      + (", ".join(f"{k} {v:.1f} s" for k, v in timing.items()) or "not recorded yet"))
if info["status"] == "finished" and "runs" in timing:  # issue 20: no phase longer than the runs phase
    over = [f"{k} {v:.1f} s" for k, v in timing.items() if k != "runs" and v > timing["runs"]]
    print(f"   target, every phase at most the runs phase ({timing['runs']:.1f} s): "
          + (f"MISSED ({', '.join(over)})" if over else "met"))
EOF
}
recipe() {  # recipe OUT SEEDS EPOCHS [--set ...]: the recipe on phantom images of the recipe's size; how far it got
    local out=$1 seeds=$2 epochs=$3; shift 3
    local t0=$SECONDS
    trap 'wait; reached "$out"; cut $((SECONDS - t0)); exit 124' TERM  # the time limit: the study stops cleanly,
    # then it says how far it got
    "$PY" -m medablate.cli run examples/pneumonia-cnn.yaml --out "$out" --set "seeds=$seeds" \
        --set "training.epochs=$epochs" --set data.path=null --set data.phantom.count_per_class=2660 \
        --set "data.split={method: stratified, val_fraction: 0.15, test_fraction: 0.15, seed: 0}" \
        --set "training.device=$DEVICE" "$@" >"$out.log" 2>&1 &
    wait $!
    local rc=$?
    [ $rc -eq 0 ] && echo $((SECONDS - t0)) >"$out.wall"  # wall seconds of a finished study, for against()
    reached "$out"
    [ $rc -eq 0 ] || tail -n 5 "$out.log"
    return $rc
}
cut() {  # cut SECONDS: what a study stopped by its limit after SECONDS says of the 1.5x target (under against)
    [ -n "${ONE_WALL:-}" ] && "$PY" -c "r = $1 / max($ONE_WALL, 1); print(f'   target, at most 1.5x one seed: \
stopped after $1 s, one seed took $ONE_WALL s: at least {r:.2f}x,', 'MISSED' if r > 1.5 else 'undecided')"
    return 0
}
against() {  # against ONE OUT SEEDS EPOCHS [--set ...]: recipe OUT ..., then its wall time over ONE's (target 1.5x)
    local one=$1; shift
    [ -f "$one.wall" ] && export ONE_WALL=$(cat "$one.wall")
    recipe "$@" || return $?
    if [ -f "$one.wall" ]; then
        "$PY" -c "one, many = $(cat "$one.wall"), $(cat "$1.wall"); r = many / max(one, 1); \
print(f'   target, at most 1.5x one seed: {many} s / {one} s = {r:.2f}x:', 'met' if r <= 1.5 else 'MISSED')"
    else
        echo "   target, at most 1.5x one seed: no finished one-seed study (part 3a) to compare with"
    fi
}
export PY DEVICE

"$PY" -c "import torch; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA GPU visible to torch'; \
print('GPU:', torch.cuda.get_device_name(0) if '$DEVICE' == 'cuda' else 'none (GPU_CHECK_DEVICE=cpu)', \
      '| torch', torch.__version__, '| CPU cores', __import__('os').cpu_count())" || exit 1
part "0. fused seeds vs one after another, course MLP, 5 seeds x 4 epochs" 30 \
    "$PY" benchmarks/fusion_time.py --device "$DEVICE" --epochs 4
part "0b. a fused step of the course MLP's 5 seeds: milliseconds, operators and kernel launches" 20 \
    "$PY" benchmarks/fusion_profile.py --device "$DEVICE"
part "1a. the course study's phantom, drawn once into the decode cache (later studies read it)" 15 \
    "$PY" -c "import time; from medablate.data.sources import phantom; t = time.perf_counter(); \
phantom.generate(1000, 256, 0); phantom.generate(200, 256, 1); print(f'   {time.perf_counter() - t:.1f} s')"
part "1b. course study, 5 seeds = 30 runs, 40 epochs, seeds fused, --workers auto (target 60 s)" 90 \
    "$PY" benchmarks/study_time.py --epochs 40 --seeds 5 --configs auto --target 60
part "2. seconds per epoch, the notebook's loop vs medablate's" 30 \
    "$PY" benchmarks/epoch_time.py --device "$DEVICE" --epochs 5
part "3a. recipe base trial, 1 seed, 30 epochs" 65 recipe "$OUT/recipe-1" "[0]" 30 --set "comparisons=[]"
part "3b. recipe base trial, 3 seeds side by side (--workers auto), 30 epochs (target: at most 1.5x 3a)" 70 \
    against "$OUT/recipe-1" "$OUT/recipe-3" "[0,1,2]" 30 --set "comparisons=[]" --workers auto
part "4. recipe study, 3 seeds x (cnn vs resnet18), 5 epochs, --workers auto" 40 recipe "$OUT/recipe-arch" "[0,1,2]" 5 \
    --set "comparisons=[{name: architecture, vary: {model: [{name: cnn}, {name: resnet18}]}}]"
if [[ " $PARTS " == *" 5 "* ]]; then  # not in the 6 minutes: GPU_CHECK_PARTS=5 (or "... 5") asks for it
    part "5. where training waits for the card: the recipe's base trial, then the course MLP's 5 seeds fused" 60 \
        bash -c "'$PY' benchmarks/waits.py examples/pneumonia-cnn.yaml --device $DEVICE; '$PY' benchmarks/waits.py examples/course-hw2.yaml --fused 5 --device $DEVICE"
fi
echo "== done in $((SECONDS - started)) s; folders under $OUT"
