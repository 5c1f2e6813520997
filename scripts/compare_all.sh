#!/usr/bin/env bash
# The seed sweep behind the comparison tables of docs/agent.md: the DreamerV3 agent (its defaults, 20k env
# steps) and sb3/sbx SAC (Pendulum-v1, 20k) and DQN (CartPole-v1, 50k), seeds 0 1 2, one job at a
# time, every agent scored by the same evaluation (20 fixed-seed episodes every 2,000 env steps);
# then the agent with the dynamics estimator (its update costs about 1.4x REINFORCE's wall time).
# Usage: bash scripts/compare_all.sh [OUT_DIR]   (needs the compare extra: pip install -e ".[compare]")
set -euo pipefail
out="${1:-results/compare}"
python="${PYTHON:-.venv/bin/python}"
for algo in dreamer sb3 sbx; do
  for env in Pendulum-v1 CartPole-v1; do
    "$python" scripts/compare_baselines.py train --algo "$algo" --env "$env" --seeds 0 1 2 \
      --eval-every 2000 --eval-episodes 20 --out "$out"
  done
done
for env in Pendulum-v1 CartPole-v1; do
  "$python" scripts/compare_baselines.py train --algo dreamer --estimator dynamics --env "$env" --seeds 0 1 2 \
    --eval-every 2000 --eval-episodes 20 --out "$out"
done
"$python" scripts/compare_baselines.py table "$out" --per-seed --json "$out/table.json" | tee "$out/table.md"
