#!/usr/bin/env bash
# GPU check: one command, about 5-6 minutes on one H100/H200 (every step has a time cap; the caps
# add up to under 10 minutes). Writes every figure to one file (default results/gpu_check.txt, or $1):
#   1. the tests marked `gpu` (every sampler on CUDA, eager and with the graphed step; no host sync
#      inside the static step; CPU/GPU metric agreement; device choice);
#   2. `bench` on CUDA, Food and Yelp2018, graphed step (cuda_graph) and eager step: seconds per
#      epoch, share of the measured matmul peak, kernel launches and graph replays per batch, where
#      the time goes;
#   3. a timed 120-epoch CNSDiff run on Yelp2018 with the graphed step, per-epoch evaluation (valid +
#      IID + OOD), diagnostics and checkpoints included (target: under 1 minute);
#   4. tuning throughput on one GPU: trials per hour with 1, 4 and 12 concurrent `tune` workers
#      (Food, CNSDiff, 8-epoch trials, no pruning before epoch 8, graphed step, one journal file).
# Needs the shared datasets: ../shared/datasets or $CNSDIFF_DATA_ROOT.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
OUT=${1:-results/gpu_check.txt}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
WORK=$(mktemp -d)
export CNSDIFF_RUNS=${CNSDIFF_RUNS:-$WORK/runs}

say() { echo "$*" | tee -a "$OUT"; }
ms() { date +%s%N | cut -c1-13; }
# run CAP_SECONDS LABEL COMMAND...: the command's output into the file, its wall time and exit status after it
run() {
  local cap=$1 label=$2; shift 2
  say ""
  say "== $label (cap ${cap}s): $*"
  local t0; t0=$(ms)
  timeout "$cap" "$@" 2>&1 | grep -v -i "sparse csr tensor support\|return adj.to_sparse_csr" | tee -a "$OUT"
  local rc=${PIPESTATUS[0]}
  say "-- $label: exit $rc$( [ "$rc" = 124 ] && echo ' (hit its cap)' ), wall $(( $(ms) - t0 )) ms"
  return "$rc"
}

say "GPU check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')" 2>&1 | tee -a "$OUT"

run 60 "1. tests marked gpu" $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
run 80 "2a. bench, graphed step" $PY -m cnsdiff_core bench --device cuda --datasets food,yelp2018 --cuda-graph
run 50 "2b. bench, eager step" $PY -m cnsdiff_core bench --device cuda --datasets food,yelp2018 --repeats 1

TRAIN=(-m cnsdiff_core train --dataset yelp2018 --sampler cnsdiff --preset tuned --device cuda --epochs 120
       --set patience=0 --json)
run 150 "3. CNSDiff, 120 epochs, Yelp2018, graphed step, evaluation every epoch" $PY "${TRAIN[@]}" --set cuda_graph=true
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then  # the graphed run failed (not slow): the eager step's pace instead
  run 60 "3b. eager step, 20 epochs (the graphed run failed)" $PY "${TRAIN[@]}" --epochs 20
fi

# 4. trials per hour: N workers share one journal; each worker runs trials until the study holds N
#    (1 worker: 2) finished ones; the rate counts the trials finished within the step's wall time
for N in 1 4 12; do
  TRIALS=$(( N == 1 ? 2 : N ))
  CAP=$(( N == 12 ? 70 : 45 ))
  STORE="$WORK/tune-$N.journal"
  t0=$(ms)
  run "$CAP" "4. tune, $N worker(s), $TRIALS trials" $PY -m cnsdiff_core tune --dataset food --sampler cnsdiff \
      --trials "$TRIALS" --epochs 8 --warmup 8 --device cuda --workers "$N" --storage "$STORE" \
      --set cuda_graph=true --json
  wall=$(( $(ms) - t0 ))
  done_trials=$($PY -c "
import optuna, sys
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
optuna.logging.set_verbosity(optuna.logging.ERROR)
s = JournalStorage(JournalFileBackend(sys.argv[1]))
print(sum(len([t for t in st.trials if t.state.is_finished()]) for st in
          [optuna.load_study(study_name=x.study_name, storage=s) for x in optuna.get_all_study_summaries(s)]))
" "$STORE" 2>/dev/null || echo 0)
  say "tune throughput: $N worker(s): $done_trials trials finished in $wall ms = $(( done_trials * 3600000 / (wall > 0 ? wall : 1) )) trials/hour"
done

say ""
say "== summary"
grep -E "^device:|CNSDiff / RNS|s/epoch|kernel launches|^-- |tune throughput" "$OUT" | tee -a "$OUT.summary" >/dev/null
cat "$OUT.summary" >> "$OUT" && rm -f "$OUT.summary"
echo "figures written to $OUT"
