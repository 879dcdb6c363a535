#!/usr/bin/env bash
# One call on a lent GPU machine: its figures, then a fine-tune of the shipped model whose
# --steps fill TRAIN_SECONDS at the step time measured first. Nothing is built there (no TTS):
# it reads a compact bank carried with the repo, and soundfile's wheels where python3 lacks it.
#
#   weighter bank --invented-voices 100 --source-siblings 100 --compact .carry/bank --compact-clips 6
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#       soundfile==0.14.0 cffi pycparser                          (README "Training on a GPU")
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh      (device tool: run, carry [".carry", ".whl"], timeout_s 600)
#
# Writes under $OUT: env.txt (machine, versions), speed.jsonl (train_speed.py, embed_speed.py),
# train.log, ft.pt (the best step by validation mAP on the compact bank) and last.ckpt (the
# last step's weights, for `weighter calibrate ft.pt --checkpoint last.ckpt`).
#
# Device time, measured on the first lent H200 (29 Nov 2026; 15 minutes per session, start and
# idle included): the machine starts in about 50 s; the wheels, train_speed.py and
# embed_speed.py take about 65 s; training then starts within 15 s. STEPS=N skips train_speed.py
# (N steps, as measured: 0.083-0.105 s a step there), SPEEDS=0 skips embed_speed.py.
# INIT (default: the shipped model; "" = from scratch, then give PRETRAIN=1200 LR=2e-3 as the
# recipe's first run did), LR and RELATED (weighter train --related) choose the run.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
BANK=${BANK:-.carry/bank}
DEVICE=${DEVICE:-cuda}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}  # with the figures first, what one 600 s call leaves
EVALS=${EVALS:-4}
EVAL_SECONDS=${EVAL_SECONDS:-15}  # one validation of 200 files, guessed; it shortens the steps
WORKERS=${WORKERS:-12 15}  # batch workers timed; the run takes the fastest
SEED=${SEED:-8}
INIT=${INIT-default}
LR=${LR:-3e-4}
PRETRAIN=${PRETRAIN:-0}
RELATED=${RELATED:-0}  # --related: share of training files that also hold a relative of their first speaker
STEPS=${STEPS:-}
SPEEDS=${SPEEDS:-1}
CACHED=${CACHED:-0}  # 1: train_speed.py also times the model alone, on batches made beforehand (~30 s more)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if ! python3 -c "import soundfile" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_session: could not install the carried wheels (.whl/)"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    lscpu | grep -m1 "Model name"
    echo "cores $(nproc)"
    python3 -c "import torch, numpy, soundfile; print('torch', torch.__version__, 'numpy', numpy.__version__,
'soundfile', soundfile.__version__, 'libsndfile', soundfile.__libsndfile_version__)"
} 2>&1 | tee "$OUT/env.txt"

if [ -z "$STEPS" ]; then
    python3 benchmarks/train_speed.py --device "$DEVICE" --bank "$BANK" --workers $WORKERS --steps 40 \
        --batches 0 $([ "$CACHED" = 1 ] && echo --cached) | tee "$OUT/speed.jsonl" || exit 1
    read -r STEP_S WORKERS < <(python3 -c "import json; print(*min((r['s_per_step'], r['workers']) for r in
map(json.loads, open('$OUT/speed.jsonl')) if 's_per_step' in r))") || exit 1
    STEPS=$(python3 -c "print(max($EVALS, int(($TRAIN_SECONDS - $EVALS * $EVAL_SECONDS) / $STEP_S) // $EVALS * $EVALS))")
    echo "step ${STEP_S}s with $WORKERS workers -> --steps $STEPS --eval-every $((STEPS / EVALS))" \
        | tee -a "$OUT/env.txt"
fi
if [ "$SPEEDS" != 0 ]; then
    python3 benchmarks/embed_speed.py --device "$DEVICE" --threads "$(nproc)" --bank "$BANK" --split validation \
        --hours 1 | tee -a "$OUT/speed.jsonl"
fi
# the hard stop leaves the best model saved at the last validation
timeout -s INT $((TRAIN_SECONDS + 60)) python3 -m weighter.cli -v train --synthetic --bank "$BANK" \
    ${INIT:+--init "$INIT"} --out "$OUT/ft.pt" --steps "$STEPS" --lr "$LR" --pretrain-steps "$PRETRAIN" \
    --reverb 0.3 --distort 0.3 --related "$RELATED" \
    --eval-every $((STEPS / EVALS)) --patience 20 --seed "$SEED" --device "$DEVICE" --workers "${WORKERS%% *}" \
    2>&1 | tee "$OUT/train.log"
python3 - "$OUT" <<'EOF'
import sys, torch
out = sys.argv[1]
state = torch.load(f"{out}/ft.pt.ckpt", map_location="cpu", weights_only=True)
torch.save({"model": state["model"], "step": state["step"]}, f"{out}/last.ckpt")
print("last step", int(state["step"]))
EOF
rm -f "$OUT/ft.pt.ckpt"  # optimizer state: too large to come back, not needed
ls -la "$OUT"
