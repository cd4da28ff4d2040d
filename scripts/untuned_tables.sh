#!/usr/bin/env bash
# The fixed-lr ("untuned protocol") tables of docs/RESULTS.md section 2: every sampler at lr 0.01,
# CNSDiff `tuned`, `paper` and `reference`, 3 seeds, 30 epochs, patience 20, tests scored once at the
# validation-selected epoch (the reference row: its own OOD-test rule). One CSV per dataset and preset
# under results/untuned/ (skipped when present).
#   bash scripts/untuned_tables.sh [DATASET ...]     (default: sample, the confounding-0.2 world, coat)
#   EPOCHS=40 PATIENCE=10 bash scripts/untuned_tables.sh food kuairec    (section 1's budget)
set -euo pipefail
cd "$(dirname "$0")/.."
SYN="synthetic:n_users=600,n_items=800,dim=16,confounding=0.2,popularity_click_rate=0.05,relevance_rate=0.15,drift=0.3,popularity_drift=0.3,interactions_per_user=45,random_exposures_per_user=30,seed=2024"
OUT=results/untuned
mkdir -p "$OUT"
COMMON=(--seeds "${SEEDS:-3}" --epochs "${EPOCHS:-30}" --device cpu --set "patience=${PATIENCE:-20}"
        --set test_eval=selected --set cpu_threads=1)
for ds in "${@:-sample syn0.2 coat}"; do
  for d in $ds; do
    name=$d; spec=$d
    [ "$d" = "syn0.2" ] && spec=$SYN
    # name, then the experiment's own arguments; a table already written is skipped
    run() {
      local file=$OUT/$1.csv; shift
      if [ ! -f "$file" ]; then
        .venv/bin/python -m cnsdiff_core experiment --dataset "$spec" "${COMMON[@]}" "$@" --out "$file.tmp"
        mv "$file.tmp" "$file"
      fi
    }
    run "$name" --no-reference --samplers mostpop,rns,pns,dns,mixgcf,ahns,cnsdiff
    run "$name-paper" --samplers cnsdiff --preset paper --no-reference --no-mostpop
    # the reference code selects its epoch on the OOD test, so it scores the tests every epoch
    run "$name-reference" --samplers cnsdiff --preset reference --no-mostpop --set test_eval=every-epoch
  done
done
