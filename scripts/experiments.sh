#!/usr/bin/env bash
# The experiment grid behind docs/RESULTS.md: every sampler on one dataset, plus CNSDiff variants
# chosen on IID validation. Jobs run in parallel, one CPU thread each (on a GPU machine they share
# the GPU). Each job is bounded by MAX_SECONDS of training (a cut run is reported as 'stopped').
#   bash scripts/experiments.sh OUTDIR DATASET [DATASET...]
# Env: DEVICE (auto), JOBS (parallel jobs, default nproc), EPOCHS (120), MAX_SECONDS (0 = none),
#      SEEDS (1), VARIANTS (1 = also the CNSDiff knob sweep), PATIENCE (config default),
#      TEST_EVAL (every-epoch; 'selected' evaluates the tests once, at the selected epoch),
#      MAIN (1; 0 = only the knob sweep, e.g. after the main rows ran).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$1; shift
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-auto}; JOBS=${JOBS:-$(nproc)}; EPOCHS=${EPOCHS:-120}; MAXS=${MAX_SECONDS:-0}
SEEDS=${SEEDS:-1}; VARIANTS=${VARIANTS:-1}; PATIENCE=${PATIENCE:-}; TEST_EVAL=${TEST_EVAL:-every-epoch}; MAIN=${MAIN:-1}
mkdir -p "$OUT/csv" "$OUT/logs"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
export CNSDIFF_RUNS=${CNSDIFF_RUNS:-$OUT/runs}
jobs_file=$(mktemp)
# main rows of every dataset first, then the CNSDiff knob sweep (so a time limit cuts the sweep)
for ds in "$@"; do
  [ "$MAIN" = 1 ] || continue
  echo "$ds mostpop tuned mostpop" >> "$jobs_file"
  for s in rns pns dns mixgcf ahns; do
    echo "$ds $s tuned baseline" >> "$jobs_file"
  done
  echo "$ds cnsdiff tuned tuned" >> "$jobs_file"
  echo "$ds cnsdiff reference reference" >> "$jobs_file"
  echo "$ds cnsdiff paper paper" >> "$jobs_file"
done
if [ "$VARIANTS" = 1 ]; then
  for ds in "$@"; do
    echo "$ds cnsdiff tuned tuned+kl causal=kl" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+nocausal causal=none" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+scale0.3 noise_scale=0.3" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+denoise1 denoise_steps=1" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+denoise8 denoise_steps=8" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+fullcl cl_negatives=0" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+mindist0.5 min_distance=0.5" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+usercond condition_on_user=true" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+mixflat mix_a0=1 mix_b0=1" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+nocl cl_weight=0" >> "$jobs_file"
    echo "$ds cnsdiff tuned tuned+stride8 hard_stride=8" >> "$jobs_file"
  done
fi
run_job() {
  ds=$1; sampler=$2; preset=$3; label=$4; shift 4
  sets=(--set "preset=$label" --set "max_seconds=$MAXS")
  [ -n "$PATIENCE" ] && sets+=(--set "patience=$PATIENCE")
  # the reference row selects on the OOD test, so it needs the tests every epoch
  [ "$preset" != reference ] && sets+=(--set "test_eval=$TEST_EVAL")
  for kv in "$@"; do sets+=(--set "$kv"); done
  $PY -m cnsdiff_core experiment --dataset "$ds" --samplers "$sampler" --preset "$preset" --seeds "$SEEDS" \
     --epochs "$EPOCHS" --device "$DEVICE" --no-reference --no-mostpop "${sets[@]}" \
     --out "$OUT/csv/${ds}__${sampler}__${label}.csv" > "$OUT/logs/${ds}__${sampler}__${label}.log" 2>&1 \
     && echo "done $ds $sampler $label" || echo "FAILED $ds $sampler $label (see $OUT/logs/${ds}__${sampler}__${label}.log)"
}
export -f run_job; export PY OUT EPOCHS DEVICE MAXS SEEDS PATIENCE TEST_EVAL
xargs -P "$JOBS" -L 1 bash -c 'run_job "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
