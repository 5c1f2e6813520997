"""The registry of action distribution families (see `dreamer_actor._src.distributions.registry`)."""

from dreamer_actor._src.distributions.registry import get as get
from dreamer_actor._src.distributions.registry import names as names
from dreamer_actor._src.distributions.registry import register as register
from dreamer_actor._src.distributions.registry import unregister as unregister

__all__ = ("get", "names", "register", "unregister")
