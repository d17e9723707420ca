#!/usr/bin/env bash
# The main job end to end on the embedded synthetic demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
OUT="${DEMO_OUT:-demo_out}"
mkdir -p "$OUT"
echo "== 1/1 generate and validate the synthetic demo dataset -> $OUT/data"
python scripts/make_demo_dataset.py --out "$OUT/data"
python scripts/make_demo_dataset.py --out "$OUT/data" --validate
