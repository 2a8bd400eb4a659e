#!/usr/bin/env bash
# The GPU check, once, from the repository root:   PYTHONPATH=. bash bench/gpu.sh
# Needs: torch, torchvision, numpy, PIL, pyyaml (timm optional); the image folder at bench_data/imagenette-mini
# (generated JPEGs stand in without it). Writes $OUT/gpu.json (default ./gpu-out) and prints the tables.
# Stops itself after 330 s so a device session is never overrun; --quick runs it tiny (CPU check).
set -euo pipefail
export OUT="${OUT:-./gpu-out}"
export PYTHONPATH="${PYTHONPATH:-.}"
PY="$(command -v python || command -v python3)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
timeout 330 "$PY" bench/gpu_bench.py "$@"
