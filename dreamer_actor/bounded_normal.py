"""`bounded_normal`: official DreamerV3's Normal with a tanh mean and a sigmoid std.

Its parameters `Params(mean, std)` (what `policy_head` returns for a bounded_normal config;
`policy_sample`, `policy_log_prob`, ... take them); see
`dreamer_actor._src.distributions.bounded_normal` for the maths.
"""

from dreamer_actor._src.distributions.bounded_normal import Params as Params

__all__ = ("Params",)
