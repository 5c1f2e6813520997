#!/usr/bin/env bash
# Official DreamerV3 (e3f0224, size1m, dmc_proprio) at the agent's budget: batch 16 x 32, train ratio 64,
# 1 env, float32, action repeat 2, 50k policy steps = 100k frames, seed 0, pendulum_swingup, core 1.
LOG=/work/runs/official/pendulum_swingup-s0
[ -f $LOG.done ] && exit 0
mkdir -p /work/runs/official
DV3_SRC=/work/peer/dreamerv3-src DV3_VENV=/work/peer/dv3-venv taskset -c 1 \
  bash /work/shared/peers/dreamerv3/run.sh dmc_pendulum_swingup 50000 $LOG 0 --env.dmc.repeat 2 \
  > /work/runs/official/pendulum_swingup-s0.run.log 2>&1 && touch $LOG.done
