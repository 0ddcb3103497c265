#!/usr/bin/env bash
# The main job: install, bring a local 3-shard cluster and FalkorDB up, run the NLP
# reference pipeline on a corpus the project generates itself, print a summary and a search.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ai,nlp
exec .venv/bin/python scripts/demo.py "$@"
