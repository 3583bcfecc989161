#!/usr/bin/env bash
# Create .venv with Python 3.11 and install Perfect10k with its locked dependencies.
# Usage: bash scripts/setup.sh [--dev]   (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

lock=requirements.lock
extra=""
if [ "${1:-}" = "--dev" ]; then
  lock=requirements-dev.lock
  extra="[test]"
fi
# Reinstall only when the lock file changed since the last install.
stamp=".venv/.installed-$(sha256sum "$lock" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing dependencies from $lock into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet -r "$lock" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install --quiet --no-deps -e ".$extra" >/dev/null 2>&1 \
    || .venv/bin/python -m pip install --no-deps -e ".$extra"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
