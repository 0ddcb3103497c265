#!/usr/bin/env bash
# The main job: install, bring a local 3-shard cluster up, load a corpus the project
# generates itself, run a word count across the shards and print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python scripts/demo.py "$@"
