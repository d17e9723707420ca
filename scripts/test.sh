#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the package with its test extra, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
python -m pytest -q "$@"
