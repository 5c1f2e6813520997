"""A compact DreamerV3 agent around `dreamer_actor`: a learned RSSM world model, replay, and an actor
(`dreamer_actor.act`) that learns only in the model's imagination.

`python -m dreamer_actor.agent --help` trains one; `dreamer_actor.agent.load(DIR)` reloads a finished
run as a policy with its own latent state.
"""

from dreamer_actor.agent.policy import Policy as Policy
from dreamer_actor.agent.policy import load as load

__all__ = ("Policy", "load")
