#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k frontdoor -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ai,nlp
# The real gears-cli (it pins redis<5) in its own venv, for the compatibility tests
# (tests/test_client.py, tests/test_compat12.py use it from there; same marker file).
GEARS_CLI_VENV="${GEARS_CLI_VENV:-/tmp/gears-cli-venv}"
if [ ! -f "$GEARS_CLI_VENV/.gears-cli-1.2.0-ok" ]; then
    rm -rf "$GEARS_CLI_VENV"
    .venv/bin/python -m venv "$GEARS_CLI_VENV"
    "$GEARS_CLI_VENV/bin/pip" install --disable-pip-version-check -q gears-cli==1.2.0
    echo ok > "$GEARS_CLI_VENV/.gears-cli-1.2.0-ok"
fi
export GEARS_CLI_VENV
exec .venv/bin/python -m pytest -q "$@"
