# Sourced by scripts/*.sh: create .venv if missing, install the package (with its test extra), activate it.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.tadaloc-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
