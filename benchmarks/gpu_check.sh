#!/usr/bin/env bash
# The GPU measurements in one prepared run, for a machine with CUDA (about 6-9 minutes; each
# step has its own time limit so one slow step cannot take the others' time): the CUDA tests,
# ViT-L forward (fp32/bf16/fp16; bf16 compiled and channels-last: tiles/s, % of the GPU's peak
# bf16 FLOP/s, km^2/s at 0.3 m), and the engine against the bare model on CUDA (pipeline /
# bare, two batches in flight).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
QT_QPA_PLATFORM=offscreen timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/
timeout 120 "$PY" benchmarks/model_forward.py --device cuda --presets vit-l-512 --batch 8 \
    --repeats 10
timeout 300 "$PY" benchmarks/model_forward.py --device cuda --presets vit-l-512 --batch 8 \
    --repeats 10 --precisions bf16 --compile --channels-last
timeout 120 "$PY" benchmarks/engine_throughput.py --device cuda --tile 512 --batch 16 \
    --repeat 6 --skip-memory
