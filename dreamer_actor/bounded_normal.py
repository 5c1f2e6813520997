"""`bounded_normal`: official DreamerV3's Normal with a tanh mean and a sigmoid std.

The family protocol (`head`, `sample`, `log_prob`, `entropy`, `mode`, checked, on
`Params(mean, std)`); see `dreamer_actor._src.distributions.bounded_normal` for the maths.
"""

from dreamer_actor._src.distributions.bounded_normal import Params as Params
from dreamer_actor._src.namespace import family_functions as _family_functions

_functions = _family_functions("bounded_normal")
head = _functions.head
sample = _functions.sample
log_prob = _functions.log_prob
entropy = _functions.entropy
mode = _functions.mode

__all__ = ("Params", "entropy", "head", "log_prob", "mode", "sample")
