#!/usr/bin/env bash
# The fair benchmark (issue 12): every sampler gets the same Optuna trial budget on IID validation
# (lr and L2 searched for all, plus each sampler's own knobs; median pruning), then 5 seeds of each
# sampler's best configuration with the tests scored once at the selected epoch, then one table
# with paired tests against the best baseline (cnsdiff_core/fair.py).
#   bash scripts/fair_benchmark.sh            tune, seeds and report; resumable: run it again to go on
#   bash scripts/fair_benchmark.sh --report   only the report, from what is stored (the table always
#                                             covers every dataset with a journal, whatever DATASETS says)
# Resumable and portable: each dataset's studies live in one journal file, OUT/studies/DATASET.journal
# (append-only text), committed with the tables as they grow (COMMIT=1), so a fresh clone continues
# where the last machine stopped. A study that holds its budget and a finished seed cell are skipped.
# Env: DATASETS ("sample coat food kuairec yelp2018"), SAMPLERS ("rns pns dns mixgcf ahns cnsdiff"),
#      TRIALS (24 per sampler), YELP_TRIALS (8 on CPU; give TRIALS on a GPU), SEEDS (5), EPOCHS (60),
#      PATIENCE (10), WORKERS (2 processes, one thread each), DEVICE (cpu), PRESET (tuned),
#      OUT (results), COMMIT (1), CHECKPOINT_S (900: a running study's journal is committed this often,
#      so a machine that goes away loses at most that much), CNSDIFF_RUNS (OUT/runs: the runs themselves,
#      not committed).
#   bash scripts/fair_benchmark.sh --snapshot  commit every journal as it stands (before a session ends)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
ALL_DATASETS="sample coat food kuairec yelp2018"
DATASETS=${DATASETS:-$ALL_DATASETS}
SAMPLERS=${SAMPLERS:-"rns pns dns mixgcf ahns cnsdiff"}
TRIALS=${TRIALS:-24}; YELP_TRIALS=${YELP_TRIALS:-8}; SEEDS=${SEEDS:-5}; EPOCHS=${EPOCHS:-60}
PATIENCE=${PATIENCE:-10}; WORKERS=${WORKERS:-2}; DEVICE=${DEVICE:-cpu}; PRESET=${PRESET:-tuned}
OUT=${OUT:-results}; COMMIT=${COMMIT:-1}; CHECKPOINT_S=${CHECKPOINT_S:-900}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
export CNSDIFF_RUNS=${CNSDIFF_RUNS:-$OUT/runs}
mkdir -p "$OUT/studies" "$OUT/fair" "$OUT/logs"

budget_of() { if [ "$1" = yelp2018 ]; then echo "$YELP_TRIALS"; else echo "$TRIALS"; fi; }
commit() {  # commit only these paths, only inside a git checkout, never failing the benchmark
  [ "$COMMIT" = 1 ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 0
  local msg=$1; shift
  local try
  for try in 1 2 3; do  # another git process (a merge, a commit elsewhere) can hold the index lock
    git add -- "$@" 2>/dev/null && git commit -q -m "$msg" -- "$@" >/dev/null 2>&1 && return 0
    git diff --quiet HEAD -- "$@" 2>/dev/null && [ -z "$(git ls-files --others --exclude-standard -- "$@")" ] && return 0
    sleep 5
  done
  echo "could not commit $* (git busy?); the next commit picks it up" >&2
}
snapshot() {  # commit what a live journal holds so far, up to its last complete line, without touching it
  [ "$COMMIT" = 1 ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 0
  local path=$1 msg=$2 tmp blob
  [ -f "$path" ] || return 0
  tmp=$(mktemp)
  $PY -c 'import sys; d = open(sys.argv[1], "rb").read(); open(sys.argv[2], "wb").write(d[:d.rfind(b"\n") + 1])' \
      "$path" "$tmp" || { rm -f "$tmp"; return 0; }
  blob=$(git hash-object -w "$tmp"); rm -f "$tmp"
  [ "$blob" = "$(git rev-parse -q --verify "HEAD:$path" 2>/dev/null)" ] && return 0  # nothing new
  # stage that copy under the journal's name and commit the index (a pathspec would take the live file)
  git update-index --add --cacheinfo "100644,$blob,$path" 2>/dev/null && git commit -q -m "$msg" >/dev/null 2>&1 \
    || echo "could not commit a snapshot of $path (git busy?); the next one picks it up" >&2
}
with_snapshots() {  # run a command; every CHECKPOINT_S seconds commit what the dataset's journal holds so far
  "$@" & local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5; waited=$((waited + 5))
    if [ "$waited" -ge "$CHECKPOINT_S" ]; then
      snapshot "$OUT/studies/$ds.journal" "Fair benchmark: $ds journal so far ($(date -u +%H:%M) UTC)"; waited=0
    fi
  done
  wait "$pid"
}
report_datasets() {  # the table covers every dataset with a journal, not only this run's DATASETS:
  local ds seen=" "      # resuming one dataset must not drop the others' rows from the committed table
  for ds in $ALL_DATASETS $DATASETS; do
    case "$seen" in *" $ds "*) continue ;; esac; seen="$seen$ds "
    { [ -f "$OUT/studies/$ds.journal" ] || [[ " $DATASETS " == *" $ds "* ]]; } && printf '%s ' "$ds"
  done
}
report() {  # its loop variable is local: the main loop's $ds names the files committed after a report
  local budgets=() ds list
  list=$(report_datasets); list=${list% }
  for ds in $list; do budgets+=(--budget "$ds=$(budget_of "$ds")"); done
  $PY -m cnsdiff_core fair-report --datasets "${list// /,}" --samplers "${SAMPLERS// /,}" \
     --studies "$OUT/studies" "${budgets[@]}" --per-user "$OUT/fair/per_user" \
     --out "$OUT/fair_benchmark.csv" --markdown "$OUT/fair_benchmark.md"
}
if [ "${1:-}" = --report ]; then report; exit $?; fi
if [ "${1:-}" = --snapshot ]; then  # before a session ends: commit every journal as it stands
  for f in "$OUT"/studies/*.journal; do snapshot "$f" "Fair benchmark: $(basename "$f" .journal) journal so far (snapshot)"; done
  exit 0
fi

for ds in $DATASETS; do
  budget=$(budget_of "$ds")
  journal="journal:$OUT/studies/$ds.journal"
  for s in $SAMPLERS; do
    echo "== $ds $s: tuning, $budget trials ($(date -u +%H:%M:%S) UTC)"
    with_snapshots $PY -m cnsdiff_core tune --dataset "$ds" --sampler "$s" --trials "$budget" --storage "$journal" \
        --study "fair-$ds-$s" --preset "$PRESET" --epochs "$EPOCHS" --set "patience=$PATIENCE" \
        --device "$DEVICE" --workers "$WORKERS" --json >> "$OUT/logs/$ds.jsonl" 2>> "$OUT/logs/$ds.log" \
      || { echo "FAILED tuning $ds $s (see $OUT/logs/$ds.log)"; continue; }
    commit "Fair benchmark: $ds $s tuned ($budget trials)" "$OUT/studies/$ds.journal"
  done
  samplers=${SAMPLERS// /,}
  echo "== $ds: $SEEDS seeds of each best configuration ($(date -u +%H:%M:%S) UTC)"
  with_snapshots $PY -m cnsdiff_core experiment --dataset "$ds" --samplers "mostpop,$samplers" --seeds "$SEEDS" \
      --preset "$PRESET" --epochs "$EPOCHS" --no-reference --best-from "$journal" --best-prefix "fair-$ds-" \
      --storage "$journal" --study "fair-seeds-$ds-t$budget" --device "$DEVICE" --workers "$WORKERS" \
      --set "patience=$PATIENCE" --set test_eval=selected --out "$OUT/fair/$ds.csv" \
      >> "$OUT/logs/$ds.log" 2>&1 || { echo "FAILED seeds $ds (see $OUT/logs/$ds.log)"; continue; }
  report > /dev/null
  commit "Fair benchmark: $ds seeds and table" "$OUT/studies/$ds.journal" "$OUT/fair" \
         "$OUT/fair_benchmark.csv" "$OUT/fair_benchmark.md"
done
report
