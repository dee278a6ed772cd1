#!/usr/bin/env bash
# The one prepared GPU check (issue #32); the checks themselves are bench/gpu_check.py.
#
#   bench/gpu_check.sh prepare     on the CPU machine: fetch the wheels the GPU machine lacks
#                                  (bench/gpu_wheels.txt) and make the dataset it reads, into
#                                  bench/out/gpu_carry (ignored by git), and check that they and the
#                                  working tree fit the 64 MiB the GPU machine receives
#   bench/gpu_check.sh OUT         on a CUDA machine, with bench/out/gpu_carry carried along: install
#                                  relviz and the wheels, run every check (under 8 minutes), write
#                                  OUT/gpu_check.json, OUT/gpu_check.log and OUT/cuda_tests.xml
#   bench/gpu_check.sh --dry OUT   on a CPU: the same checks at toy size, the CUDA tests skipped (CI)
#
# Exit status 0 when every check passed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARRY=$ROOT/bench/out/gpu_carry
LIMIT=$((64 * 1024 * 1024))  # what the GPU machine receives: working tree plus carried paths
usage() { sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
prepare)
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
    # pure-Python wheels for the GPU machine's Python 3.12, without their dependencies (it has those)
    env PIP_CONFIG_FILE=/dev/null "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" -r "$ROOT/bench/gpu_wheels.txt"
    PYTHONPATH=$ROOT "$PY" "$ROOT/bench/gpu_check.py" prepare "$CARRY/dataset"
    tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
           xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
    wheels=$(du -sb "$CARRY/wheels" | cut -f1)
    data=$(du -sb "$CARRY/dataset" | cut -f1)
    total=$((tree + wheels + data))
    mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
    echo "working tree $(mib "$tree") + wheels $(mib "$wheels") + dataset $(mib "$data") = $(mib "$total")" \
         "of $(mib "$LIMIT")"
    if [ "$total" -gt "$LIMIT" ]; then
        echo "over the limit: the GPU machine would refuse it" >&2; exit 1
    fi
    echo "ready: run 'bash bench/gpu_check.sh \$OUT' there with bench/out/gpu_carry carried along"
    ;;
--dry)
    [ $# -eq 2 ] || usage
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    mkdir -p "$2" && rm -f "$2/gpu_check.log"
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    exec "$PY" "$ROOT/bench/gpu_check.py" check --dry "$2"
    ;;
""|-*)
    usage
    ;;
*)
    [ $# -eq 1 ] || usage
    [ -d "$CARRY/wheels" ] || { echo "$CARRY/wheels: missing; run 'bench/gpu_check.sh prepare' first" >&2; exit 1; }
    mkdir -p "$1" && rm -f "$1/gpu_check.log"
    # the machine's own python (torch built for its CUDA), the carried wheels beside it
    SITE=$(mktemp -d /tmp/relviz-gpu-site.XXXX)
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        "$CARRY"/wheels/*.whl
    export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    # relviz itself, from the working tree (its pinned dependencies are not that machine's: no checks)
    if ! python3 -m pip install --quiet --no-index --no-deps --no-build-isolation -e "$ROOT" >"$1/pip.txt" 2>&1; then
        echo "pip install -e failed (on PYTHONPATH instead): $(tail -n 3 "$1/pip.txt")" | tee "$1/gpu_check.log"
    fi
    rm -f "$1/pip.txt"
    exec python3 "$ROOT/bench/gpu_check.py" check "$1" --dataset "$CARRY/dataset"
    ;;
esac
