#!/usr/bin/env bash
# CartPole-v1 by algo: `dqn train algo=ALGO seed=S` at each algo's CartPole defaults, on seeds
# no preset was tuned on, JOBS runs at a time (torch_threads=1 each), each run's small result
# files copied into results/cartpole_algos/ALGO/seed_S/. Runs already there are skipped. Then
# the figure (dqn plot: one line per algo) and a table of solved seeds and wall times.
#
#   scripts/cartpole_algos.sh                              # every algo, seeds 401-405, 2 at a time
#   ALGOS="dqn pqn" SEEDS="406 407" JOBS=1 scripts/cartpole_algos.sh
#   scripts/cartpole_algos.sh --plot-only
set -euo pipefail
cd "$(dirname "$0")/.."
DQN=${DQN:-.venv/bin/dqn}
ALGOS=${ALGOS:-dqn c51 qr_dqn rainbow pqn}
SEEDS=${SEEDS:-401 402 403 404 405}
JOBS=${JOBS:-2}
OUT=${OUT:-results/cartpole_algos}

one_run() { # ALGO SEED
  local dest="$OUT/$1/seed_$2" run="outputs/cartpole_algos/$1_seed_$2"
  if [ -f "$dest/summary.json" ]; then echo "have $dest"; return; fi
  rm -rf "$run"
  # shellcheck disable=SC2086
  "$DQN" train algo="$1" seed="$2" torch_threads=1 progress=off ${EXTRA:-} hydra.run.dir="$run" >/dev/null
  .venv/bin/python scripts/collect_results.py "$run" "$OUT/$1" >/dev/null
  echo "done $dest"
}

if [ "${1:-}" != "--plot-only" ]; then
  for algo in $ALGOS; do
    for seed in $SEEDS; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
      one_run "$algo" "$seed" &
    done
  done
  wait
fi
dirs=()
for algo in $ALGOS; do [ -d "$OUT/$algo" ] && dirs+=("$OUT/$algo"); done
"$DQN" plot "${dirs[@]}" --metric eval --out "$OUT/cartpole_algos.png" \
  --title "CartPole-v1 by algo: greedy evaluation return (20 episodes), mean and 95% CI over seeds"
.venv/bin/python - "$OUT" "${dirs[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path
out, rows = Path(sys.argv[1]), ["| algo | seeds | solved (final greedy mean >= 475) | final greedy means | median wall time per run |",
                               "| --- | --- | ---: | --- | ---: |"]
for d in map(Path, sys.argv[2:]):
    runs = [json.loads(p.read_text()) for p in sorted(d.glob("seed_*/summary.json"))]
    finals = [r["final_eval_mean_return"] for r in runs]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    walls = statistics.median(r["wall_seconds"] for r in runs)
    rows.append(f"| {d.name} | {seeds} | {sum(f >= 475 for f in finals)} / {len(runs)} | "
                f"{', '.join(f'{f:.0f}' for f in finals)} | {walls:.1f} s |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
