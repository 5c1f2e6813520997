"""Examples built on `dreamer_actor`: the Pendulum imagination demo (`python -m dreamer_actor.demo`).

* `pendulum`: a differentiable JAX model of gymnasium's `Pendulum-v1`.
* `imagination`: DreamerV3-style actor-critic learning on imagined rollouts of that model.
* `evaluation`: running a policy on the real gymnasium environment on fixed seeds.
"""
