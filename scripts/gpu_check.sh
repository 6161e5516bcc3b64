#!/usr/bin/env bash
# The GPU check, for a lent machine like the device tool's (one GPU, Python 3.12 with a CUDA
# torch, no network, no gymnasium/ale-py/hydra): installs the wheels `make gpu-wheels` put in
# .whl/ into .gpu_site/ (pip install --no-index --target), then runs scripts/gpu_check.py:
# the `cuda` tests, `dqn bench update` on cuda, Breakout with DQN and with PQN, and 200k MinAtar
# steps, each with its own timeout (about 5 minutes in all), the figures written into
# $OUT/gpu_check.json as each step ends, and a table.
#
#   make gpu-wheels                      # here, with network: the wheels (about 5 MB)
#   scripts/gpu_check.sh                 # there (the device tool's run: OUT is its output folder)
#   scripts/gpu_check.sh --dry           # here: the same steps on the CPU, tiny budgets
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
if [ "${1:-}" = "--dry" ]; then
  exec .venv/bin/python scripts/gpu_check.py --out "$OUT" --dry
fi
PYTHON=${PYTHON:-python3}
[ -d .whl ] || { echo "gpu_check: no .whl/ here; run make gpu-wheels where there is network" >&2; exit 2; }
timeout 120 "$PYTHON" -m pip install --quiet --no-index --no-deps --target .gpu_site .whl/*.whl
export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py --out "$OUT"
