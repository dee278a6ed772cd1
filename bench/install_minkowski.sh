#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 CPU-only from the registry's sdist into .venv, for side-by-side
# comparisons with relviz's pure-PyTorch sparse backend. Optional: relviz never needs it.
# Takes about 8-10 minutes on 2 cores. Needs root (or sudo) for libopenblas-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= .venv/bin/pip"
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
fi
setuptools_before=$(.venv/bin/python -c "import setuptools; print(setuptools.__version__)")
# ME's setup.py needs the old distutils-based setuptools; put the previous one back afterwards.
$PIP install --quiet "setuptools<60" wheel ninja
trap '$PIP install --quiet "setuptools==$setuptools_before"' EXIT
# CPU-only: torch.cuda is unavailable here, and --cpu_only makes sure of it where it is not.
MAX_JOBS=2 $PIP install --no-build-isolation --no-deps --no-cache-dir -v MinkowskiEngine==0.5.4 \
    --config-settings="--build-option=--cpu_only" --config-settings="--build-option=--blas=openblas"
.venv/bin/python -c "import collections, collections.abc; collections.Sequence = collections.abc.Sequence; import MinkowskiEngine as ME; print('MinkowskiEngine', ME.__version__)"
