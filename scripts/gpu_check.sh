#!/usr/bin/env bash
# GPU check, one command, well under 10 minutes on one H100/H200:
#   1. the tests marked `gpu` (every sampler on CUDA, CPU/GPU metric agreement, device choice);
#   2. CNSDiff (tuned) for 20 epochs on Yelp2018: seconds per epoch and metrics;
#   3. a full 120-epoch CNSDiff run on Yelp2018 (target: under 2 minutes on one H100).
# Needs the shared datasets: ../shared/datasets or $CNSDIFF_DATA_ROOT.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
RUNS=${CNSDIFF_RUNS:-$(mktemp -d)}
export CNSDIFF_RUNS=$RUNS
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "== 1. tests marked gpu"
$PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
echo "== 2. CNSDiff (tuned), 20 epochs, Yelp2018"
$PY -m cnsdiff_core train --dataset yelp2018 --sampler cnsdiff --preset tuned --device cuda --epochs 20 --set patience=0
echo "== 3. CNSDiff (tuned), full 120 epochs, Yelp2018"
start=$(date +%s%N)
$PY -m cnsdiff_core train --dataset yelp2018 --sampler cnsdiff --preset tuned --device cuda --epochs 120 --set patience=0
end=$(date +%s%N)
echo "full 120-epoch run, wall clock including data loading and per-epoch evaluation: $(( (end - start) / 1000000 )) ms"
$PY -m cnsdiff_core list | head -5
