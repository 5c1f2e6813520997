"""The actor network and its building blocks (`MLP`: the same blocks for the rest of an agent)."""

from dreamer_actor._src.networks import MLP as MLP
from dreamer_actor._src.networks import Actor as Actor
from dreamer_actor._src.networks import RMSNorm as RMSNorm
from dreamer_actor._src.networks import flatten_latent as flatten_latent

__all__ = ("MLP", "Actor", "RMSNorm", "flatten_latent")
