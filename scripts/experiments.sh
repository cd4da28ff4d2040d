#!/usr/bin/env bash
# The experiment grid behind docs/RESULTS.md: every sampler on each dataset, CNSDiff also at the
# paper and reference presets and, with VARIANTS=1, in its knob variants chosen on IID validation.
# A thin call of `python -m cnsdiff_core experiment`: each dataset's grid is one study on a storage
# (cnsdiff_core/tune.py), shared by JOBS local worker processes (one CPU thread each). It is
# resumable: run it again and finished cells are kept. To spread a grid over more machines, start
# the same command there with STORAGE set to one PostgreSQL URL or a shared journal file.
#   bash scripts/experiments.sh OUTDIR DATASET [DATASET...]
# Env: DEVICE (auto), JOBS (worker processes, default nproc), EPOCHS (120), MAX_SECONDS (0 = none),
#      SEEDS (1), VARIANTS (1 = also the CNSDiff knob sweep), PATIENCE (config default),
#      TEST_EVAL (every-epoch; 'selected' scores the tests once, at the selected epoch; the
#      reference row keeps every-epoch, as it selects on the OOD test),
#      STORAGE (default OUTDIR/runs/studies.db).
# Tables: OUTDIR/csv/DATASET__all.csv (python -m cnsdiff_core report OUTDIR/csv/DATASET__*.csv), logs in OUTDIR/logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$1; shift
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$OUT/csv" "$OUT/logs"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
export CNSDIFF_RUNS=${CNSDIFF_RUNS:-$OUT/runs}
args=(--samplers mostpop,rns,pns,dns,mixgcf,ahns,cnsdiff --preset tuned,paper --seeds "${SEEDS:-1}"
      --epochs "${EPOCHS:-120}" --device "${DEVICE:-auto}" --workers "${JOBS:-$(nproc)}"
      --set "max_seconds=${MAX_SECONDS:-0}" --set "test_eval=${TEST_EVAL:-every-epoch}")
[ -n "${PATIENCE:-}" ] && args+=(--set "patience=$PATIENCE")
[ -n "${STORAGE:-}" ] && args+=(--storage "$STORAGE")
if [ "${VARIANTS:-1}" = 1 ]; then
  for v in tuned+kl:causal=kl tuned+nocausal:causal=none tuned+scale0.3:noise_scale=0.3 \
           tuned+denoise1:denoise_steps=1 tuned+denoise8:denoise_steps=8 tuned+fullcl:cl_negatives=0 \
           tuned+mindist0.5:min_distance=0.5 tuned+usercond:condition_on_user=true \
           tuned+mixflat:mix_a0=1,mix_b0=1 tuned+nocl:cl_weight=0 tuned+stride8:hard_stride=8; do
    args+=(--variant "$v")
  done
fi
for ds in "$@"; do
  $PY -m cnsdiff_core experiment --dataset "$ds" "${args[@]}" --out "$OUT/csv/${ds}__all.csv" > "$OUT/logs/$ds.log" 2>&1 \
    && echo "done $ds" || echo "FAILED $ds (see $OUT/logs/$ds.log)"
done
