#!/usr/bin/env bash
# The Atari 100k benchmark: `dqn train env=atari100k algo=ALGO env.game=GAME seed=S` at the
# preset's values (100k agent steps, 100 evaluation episodes at the end) for each game and seed,
# each finished run's small files copied into results/atari100k/ALGO/GAME/seed_S/ (summary.json,
# evals.csv, episodes.csv, config.yaml). Runs already there are skipped, so the benchmark grows
# across sessions: run it again and it does what is missing. A run that was stopped (Ctrl-C, a
# kill, the machine's session ending) resumes from its last checkpoint, which holds the replay
# buffer and the emulator's state (checkpoint.save_replay=true every 5,000 steps): the resumed run
# is the uninterrupted one, to the bit (docs/resume.md). A stop that cannot be resumed exactly
# (scripts/resumable.py says why) starts the run again. Then the tables and figures:
# scripts/atari100k.sh --plot-only
#
#   scripts/atari100k.sh                                   # drq_eps, the first tranche: 8 games x seeds 1-3
#   GAMES="Alien Amidar" SEEDS=1 scripts/atari100k.sh      # some of them
#   ALGO=der GAMES="Alien Amidar" SEEDS=1 scripts/atari100k.sh
#   GAMES=all scripts/atari100k.sh                         # the whole benchmark: its 26 games
#   THREADS=1 scripts/atari100k.sh                         # one torch thread; start it twice for two at a
#                                                          # time: each takes the runs the other has not
set -euo pipefail
cd "$(dirname "$0")/.."
DQN=${DQN:-.venv/bin/dqn}
PYTHON=${PYTHON:-.venv/bin/python}
ALGO=${ALGO:-drq_eps}
# The first 8 of the 26 games in alphabetical order: picked by name, not by results.
GAMES=${GAMES:-Alien Amidar Assault Asterix BankHeist BattleZone Boxing Breakout}
if [ "$GAMES" = all ]; then
  GAMES=$("$PYTHON" -c "from dqn_cli.config import ATARI_100K_GAMES as G; print(' '.join(G))")
fi
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-0}
OUT=${OUT:-results/atari100k}
RUNS=${RUNS:-outputs/atari100k}   # the run dirs (checkpoints, TensorBoard): not committed
mkdir -p "$RUNS"
# Two copies of this script may run at once: each claims a run for as long as it (or its dqn
# process) works on it, and copying results and plotting them take one shared lock, so neither
# copy reads files the other is half-way through writing (flock(1), util-linux).
command -v flock > /dev/null || { echo "scripts/atari100k.sh: needs flock(1) (util-linux)" >&2; exit 1; }
results_locked() { flock "$RUNS/.results.lock" "$@"; }

if [ "${1:-}" != "--plot-only" ]; then
  for seed in $SEEDS; do   # seed-major: every game gets its first seed before any gets a second
    for game in $GAMES; do
      dest="$OUT/$ALGO/$game/seed_$seed"
      if [ -f "$dest/summary.json" ]; then echo "have $dest"; continue; fi
      run="$RUNS/${ALGO}_${game}_seed_$seed"
      # the claim (the kernel drops it when this script and its dqn process have both exited):
      # a second copy of this script skips the run instead of starting it over the first one's
      exec 9>"$RUNS/.${ALGO}_${game}_seed_$seed.claim"
      claimed=0; flock -n 9 || claimed=$?
      if [ "$claimed" -eq 1 ]; then echo "busy $run: another scripts/atari100k.sh has it"; exec 9>&-; continue; fi
      if [ "$claimed" -ne 0 ]; then exit "$claimed"; fi
      if [ -f "$run/summary.json" ]; then
        echo "finished $run"
      elif [ -f "$run/checkpoints/last.pt" ] && "$PYTHON" scripts/resumable.py "$run"; then
        "$DQN" train resume="$run" progress=log
      else  # new, or a stop that cannot be resumed exactly: from the start
        rm -rf "$run"
        # shellcheck disable=SC2086
        "$DQN" train env=atari100k algo="$ALGO" env.game="$game" seed="$seed" torch_threads="$THREADS" \
          progress=log checkpoint.every=5000 checkpoint.keep=1 checkpoint.save_replay=true ${EXTRA:-} \
          hydra.run.dir="$run"
      fi
      results_locked "$PYTHON" scripts/collect_results.py "$run" "$OUT/$ALGO/$game"
      exec 9>&-
    done
  done
fi
# the learning curves per game, and (dqn plot sees env.suite=atari100k) the per-game table, the
# aggregate table (IQM, median, mean, optimality gap with CIs) and the performance profile:
# atari100k.png, atari100k.md, atari100k_games.md, atari100k_aggregate.md, atari100k_profile.png
if [ -d "$OUT" ]; then
  # the dashed line of each game's panel: DrQ(eps)'s published score (dqn_cli/app/atari_scores.py)
  mapfile -t REFS < <("$PYTHON" -c "from dqn_cli.app.atari_scores import PUBLISHED as P
for g, v in P['DrQ(eps)'].items(): print(f'--reference={g}={v}')")
  results_locked "$DQN" plot "$OUT" --out "$OUT/atari100k.png" "${REFS[@]}" \
    --title "Atari 100k, dqn train env=atari100k: evaluation return (10 episodes every 25k steps, 100 at the end)"
fi
