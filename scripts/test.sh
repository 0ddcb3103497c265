#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k frontdoor -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ai,nlp
exec .venv/bin/python -m pytest -q "$@"
