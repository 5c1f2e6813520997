"""`tanh_normal`: the tanh-squashed, affinely scaled Gaussian (the default family).

Its parameters `Params(mean, log_std)` (what `policy_head` returns for a tanh_normal config;
`policy_sample`, `policy_log_prob`, ... take them), the seed functions on `(mean, log_std)`
(`sample_action`, `log_prob_with_tanh_correction`, `entropy_estimate`, also top level), and
the maths helpers. See `dreamer_actor._src.distributions.tanh_normal` for the formulas.
"""

from dreamer_actor._src.distributions.tanh_normal import Params as Params
from dreamer_actor._src.distributions.tanh_normal import gaussian_entropy as gaussian_entropy
from dreamer_actor._src.distributions.tanh_normal import log1m_tanh_sq as log1m_tanh_sq
from dreamer_actor._src.distributions.tanh_normal import squash as squash
from dreamer_actor._src.distributions.tanh_normal import unsquash as unsquash
from dreamer_actor._src.tanh_normal_api import as_distrax as as_distrax
from dreamer_actor._src.tanh_normal_api import entropy_estimate as entropy_estimate
from dreamer_actor._src.tanh_normal_api import log_prob_with_tanh_correction as log_prob_with_tanh_correction
from dreamer_actor._src.tanh_normal_api import mode_action as mode_action
from dreamer_actor._src.tanh_normal_api import sample_action as sample_action

__all__ = (
    "Params",
    "as_distrax",
    "entropy_estimate",
    "gaussian_entropy",
    "log1m_tanh_sq",
    "log_prob_with_tanh_correction",
    "mode_action",
    "sample_action",
    "squash",
    "unsquash",
)
