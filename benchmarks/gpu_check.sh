#!/usr/bin/env bash
# The GPU measurements in one prepared run, for a machine with CUDA (about 5-8 minutes):
# the CUDA tests, ViT-L forward (fp32/bf16/fp16, torch.compile, channels-last: tiles/s, % of
# the GPU's peak bf16 FLOP/s, km^2/s at 0.3 m), and the engine against the bare model on CUDA
# (pipeline / bare, with two batches in flight).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
QT_QPA_PLATFORM=offscreen "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/
"$PY" benchmarks/model_forward.py --device cuda --presets vit-l-512 --batch 8 --repeats 10 \
    --compile --channels-last
"$PY" benchmarks/engine_throughput.py --device cuda --tile 512 --batch 16 --repeat 6 --skip-memory
