#!/usr/bin/env bash
# Build the wheel, install it (without the checkout) into a fresh venv, and run the five tools on a tiny demo
# from a folder outside the checkout: presets and configs must come from the installed package.
# The fresh venv borrows the heavy dependencies (torch, ...) from .venv through a .pth file, so the check
# takes seconds; the package itself comes only from the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . >/dev/null
python3 -m venv "$work/venv"
deps=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
fresh=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$deps" > "$fresh/borrowed-deps.pth"
# the editable install of the checkout must not leak into the fresh venv
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/tadaloc-*.whl
bin="$work/venv/bin"
cd "$work"
"$bin/python" - <<'PY'
import importlib, sys
for name in ("tal_common", "feature_extraction", "localization", "eval", "tadaloc_configs"):
    module = importlib.import_module(name)
    assert "site-packages" in module.__file__ and "/work/main" not in module.__file__, (name, module.__file__)
print("package imported from the wheel:", importlib.import_module("localization").__file__)
PY
"$bin/python" -c "from tal_common.demo_dataset import DemoConfig, make_demo_dataset; from pathlib import Path; \
make_demo_dataset(Path('data'), DemoConfig(train_videos=6, val_videos=2, seed=2, duration_range=(8.0, 10.0), \
action_range=(2.0, 4.0), max_actions=1), workers=2)"
"$bin/extract-features" data/videos -o features.h5 --preset demo --device cpu --set run.workers=1
"$bin/train-localizer" --config demo_bmn --features features.h5 --annotations data/annotations/hacs.json \
    --work-dir run --set train.epochs=1 --set data.tscale=16 --set data.dscale=16 --set model.num_samples=4
"$bin/localize" --run run --features features.h5 --annotations data/annotations/hacs.json -o detections.json
"$bin/evaluate" --dataset hacs --annotations data/annotations/hacs.json --subset validation \
    --predictions detections.json --unknown-labels false_positive -o report
"$bin/detect" data/videos/"$(ls data/videos | head -1)" --run run -o detect_out
test -s report/report.json && test -s detect_out/index.md
# the README's "First hour" and "Your own data" blocks as written, with the wheel's tools on the PATH
(cd "$repo" && TADALOC_README_INSTALLED=1 PATH="$bin:$PATH" python -m pytest -q -p no:cacheprovider tests/test_readme.py)
echo "check_wheel: the installed wheel ran extract-features, train-localizer, localize, evaluate and detect from $work, and the README's first-hour and own-data commands"
