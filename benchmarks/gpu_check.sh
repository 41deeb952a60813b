#!/usr/bin/env bash
# Every CUDA test and every GPU benchmark, in one prepared run of under 8 minutes, ending in one
# table that names the device (benchmarks/gpu_check.py does the work and lists the checks):
#   pytest -m cuda; matching a batch of 16 (bench_match.py --cuda-only); EMA and loss
#   (bench_train_pieces.py --device cuda --model swin); one SemiRES training step of the
#   example's LAVT at Swin-B size in bf16 (bench_gpu_step.py).
# On a machine without CUDA it says so and exits 0. Exit 1 when a check fails or times out.
# Usage: bash benchmarks/gpu_check.sh        (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
    echo "gpu_check: no CUDA device here (or torch does not import); nothing to run, exit 0."
    exit 0
fi
# the checks have their own limits (435 s in all); this one only guards against a hang
exec timeout 470 "$PY" benchmarks/gpu_check.py
