"""A compact DreamerV3 agent around `dreamer_actor`: a learned RSSM world model, replay, and an actor
(`dreamer_actor.act`) that learns only in the model's imagination.

`python -m dreamer_actor.agent --help` trains one; `dreamer_actor.agent.load(DIR)` reloads a run as a
policy with its own latent state, to act in `dreamer_actor.agent.make_env(env_id, action_repeat)`, the
env as the run saw it.
"""

from dreamer_actor.agent.envs import make_env as make_env
from dreamer_actor.agent.policy import Policy as Policy
from dreamer_actor.agent.policy import load as load

__all__ = ("Policy", "load", "make_env")
