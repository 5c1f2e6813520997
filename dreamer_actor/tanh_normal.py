"""`tanh_normal`: the tanh-squashed, affinely scaled Gaussian (the default family).

The family protocol (`head`, `sample`, `log_prob`, `entropy`, `mode`, checked, on
`Params(mean, log_std)`), the seed functions on `(mean, log_std)` (`sample_action`,
`log_prob_with_tanh_correction`, `entropy_estimate`, also top level) and the maths
helpers. See `dreamer_actor._src.distributions.tanh_normal` for the formulas.
"""

from dreamer_actor._src.distributions.tanh_normal import Params as Params
from dreamer_actor._src.distributions.tanh_normal import gaussian_entropy as gaussian_entropy
from dreamer_actor._src.distributions.tanh_normal import log1m_tanh_sq as log1m_tanh_sq
from dreamer_actor._src.distributions.tanh_normal import squash as squash
from dreamer_actor._src.distributions.tanh_normal import unsquash as unsquash
from dreamer_actor._src.namespace import family_functions as _family_functions
from dreamer_actor._src.tanh_normal_api import as_distrax as as_distrax
from dreamer_actor._src.tanh_normal_api import entropy_estimate as entropy_estimate
from dreamer_actor._src.tanh_normal_api import log_prob_with_tanh_correction as log_prob_with_tanh_correction
from dreamer_actor._src.tanh_normal_api import mode_action as mode_action
from dreamer_actor._src.tanh_normal_api import sample_action as sample_action

_functions = _family_functions("tanh_normal")
head = _functions.head
sample = _functions.sample
log_prob = _functions.log_prob
entropy = _functions.entropy
mode = _functions.mode

__all__ = (
    "Params",
    "as_distrax",
    "entropy",
    "entropy_estimate",
    "gaussian_entropy",
    "head",
    "log1m_tanh_sq",
    "log_prob",
    "log_prob_with_tanh_correction",
    "mode",
    "mode_action",
    "sample",
    "sample_action",
    "squash",
    "unsquash",
)
