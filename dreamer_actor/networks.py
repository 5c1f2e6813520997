"""The actor network and its building blocks."""

from dreamer_actor._src.networks import Actor as Actor
from dreamer_actor._src.networks import RMSNorm as RMSNorm
from dreamer_actor._src.networks import flatten_latent as flatten_latent

__all__ = ("Actor", "RMSNorm", "flatten_latent")
