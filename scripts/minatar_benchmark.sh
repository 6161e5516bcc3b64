#!/usr/bin/env bash
# The MinAtar benchmark of the README: `dqn train env=minatar algo=ALGO` at its defaults
# (1M env steps) on each game and seed, one run at a time, each run's small result files
# copied into results/minatar/GAME/seed_S/ (algo=dqn, the default) or
# results/minatar_ALGO/GAME/seed_S/ (summary.json, evals.csv, episodes.csv, config.yaml).
# Runs whose results are already there are skipped, so the benchmark grows across sessions.
# Then the figures: scripts/minatar_benchmark.sh --plot-only
#
#   scripts/minatar_benchmark.sh                       # all five games, seeds 1 2 3
#   GAMES="Breakout Freeway" SEEDS="4 5" scripts/minatar_benchmark.sh
#   ALGO=rainbow GAMES=Breakout SEEDS=1 scripts/minatar_benchmark.sh
#   EXTRA="total_steps=200000" scripts/minatar_benchmark.sh   # extra overrides for every run
set -euo pipefail
cd "$(dirname "$0")/.."
DQN=${DQN:-.venv/bin/dqn}
GAMES=${GAMES:-Breakout Freeway SpaceInvaders Asterix Seaquest}
SEEDS=${SEEDS:-1 2 3}
ALGO=${ALGO:-dqn}
if [ "$ALGO" = dqn ]; then OUT=${OUT:-results/minatar}; else OUT=${OUT:-results/minatar_$ALGO}; fi
# The paper's DQN at 1M frames, read from its figure (training returns, 100-episode average)
REFS=(--reference MinAtar/Breakout=9.5 --reference MinAtar/Freeway=49 --reference MinAtar/SpaceInvaders=35
      --reference MinAtar/Asterix=11)

if [ "${1:-}" != "--plot-only" ]; then
  for game in $GAMES; do
    for seed in $SEEDS; do
      dest="$OUT/$game/seed_$seed"
      if [ -f "$dest/summary.json" ]; then echo "have $dest"; continue; fi
      run="outputs/minatar_benchmark/${ALGO}_${game}_seed_$seed"
      rm -rf "$run"
      # shellcheck disable=SC2086
      "$DQN" train env=minatar env.game="$game" algo="$ALGO" seed="$seed" progress=log ${EXTRA:-} hydra.run.dir="$run"
      .venv/bin/python scripts/collect_results.py "$run" "$OUT/$game"
    done
  done
fi
"$DQN" plot results/minatar --metric train "${REFS[@]}" --out results/minatar/minatar_train.png \
  --title "MinAtar, dqn train env=minatar: training return (100-episode mean), mean and 95% CI over seeds"
"$DQN" plot results/minatar --metric eval --out results/minatar/minatar_eval.png \
  --title "MinAtar, dqn train env=minatar: greedy evaluation return, mean and 95% CI over seeds"
# every algo beside DQN, where other algos have results: one line per algo in each game's panel
others=(results/minatar_*/)
if [ -d "${others[0]}" ]; then
  "$DQN" plot results/minatar "${others[@]%/}" --metric train "${REFS[@]}" --out results/minatar_algos.png \
    --title "MinAtar by algo: training return (100-episode mean), mean and 95% CI over seeds"
fi
