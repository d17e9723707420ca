#!/usr/bin/env bash
# On a machine with a GPU: set up .venv (scripts/_venv.sh), generate videos, extract them with the hacs preset at
# full width (random weights) on the CPU (reference), on CUDA in fp32 and in bf16 (channels_last), and under
# torchrun with 2 ranks on the GPU(s) present; print clips/s, peak GPU memory and the max |diff| of every CUDA
# result against the CPU features of the same clips. Exits non-zero when a run fails or a CUDA result is beyond
# bf16 tolerance (2 when no GPU is visible). About 3-5 minutes on one data-centre GPU with 16 CPU cores.
#
#   scripts/gpu_check.sh [--work-dir DIR]      (default gpu_check_out/)
#   scripts/gpu_check.sh --cpu-dry-run         every step on the CPU with a thin model and tiny videos
#
# TADALOC_PYTHON=/path/to/python uses that interpreter (with the package importable) instead of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TADALOC_PYTHON:-}" ]; then
    PY="$TADALOC_PYTHON"
else
    source scripts/_venv.sh
    PY=python
fi
exec timeout 480 "$PY" scripts/gpu_check.py "$@"
