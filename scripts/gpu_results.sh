#!/usr/bin/env bash
# What produced the GPU figures in docs/RESULTS.md, as one device-machine command:
#   CNSDIFF_DATA_ROOT=<shared datasets> OUT=<folder> bash scripts/gpu_results.sh
# 1. scripts/gpu_check.sh (gpu tests, 20-epoch and 120-epoch CNSDiff on Yelp2018), alone on the GPU;
# 2. the speed benchmark on CUDA;
# 3. the experiment grid on food, yelp2018, kuairec in parallel jobs, bounded in time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT}
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
CNSDIFF_RUNS=/tmp/gpu_check_runs timeout -k 5 "${CHECK_SECONDS:-270}" bash scripts/gpu_check.sh 2>&1 | tee "$OUT/gpu_check.log"
timeout -k 5 "${BENCH_SECONDS:-60}" $PYTHON -m cnsdiff_core bench --device cuda --epochs 2 2>&1 | tee "$OUT/bench_gpu.txt"
EXP=/tmp/exp
DEVICE=cuda JOBS=${JOBS:-12} EPOCHS=${EPOCHS:-60} MAX_SECONDS=${MAX_SECONDS:-100} \
  PATIENCE=${PATIENCE:-10} TEST_EVAL=${TEST_EVAL:-selected} SEEDS=${SEEDS:-1} \
  timeout -k 5 "${EXP_SECONDS:-300}" bash scripts/experiments.sh "$EXP" food yelp2018 kuairec > "$OUT/experiments.log" 2>&1
(cd "$EXP" && find runs -name '*.csv' -o -name '*.json' | tar czf "$OUT/experiments.tgz" csv logs -T -)
ls -la "$OUT"
