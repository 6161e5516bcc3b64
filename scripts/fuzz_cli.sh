#!/usr/bin/env bash
# Fuzz `dqn train`'s front door with N random examples (tests/test_fuzz.py; CI runs a fixed 120):
# overrides drawn from the config schema, valid and not, each accepted (exit 0) or refused in one
# line (exit 2) with nothing left behind. Prints Hypothesis's count of the examples tried.
#
#   scripts/fuzz_cli.sh          # 2000 examples (about a second each: a composition and the checks)
#   scripts/fuzz_cli.sh 200
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n 2,8p "$0"; exit 0; fi
N=${1:-2000}
DQN_FUZZ_EXAMPLES=$N ${PYTHON:-.venv/bin/python} -m pytest -q -p no:cacheprovider tests/test_fuzz.py \
  --hypothesis-show-statistics
