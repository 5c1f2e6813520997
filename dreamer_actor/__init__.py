"""dreamer_actor: the actor (policy) of a JAX Dreamer agent.

The flat core is below: `act`, and one checked function per verb for every distribution
family (`policy_head`, `policy_sample`, `policy_log_prob`, `policy_entropy`, `policy_mode`,
dispatching on `config.distribution`). Each family's module holds its parameters and its own
maths (`dreamer_actor.tanh_normal`, `.bounded_normal`, `.categorical`); the building blocks live
in `dreamer_actor.networks`, `.train` and `.distributions`.
"""

from dreamer_actor import bounded_normal as bounded_normal
from dreamer_actor import categorical as categorical
from dreamer_actor import distributions as distributions
from dreamer_actor import networks as networks
from dreamer_actor import tanh_normal as tanh_normal
from dreamer_actor import train as train
from dreamer_actor._src.act import ActorOutput as ActorOutput
from dreamer_actor._src.act import act as act
from dreamer_actor._src.checkpoint import Checkpoint as Checkpoint
from dreamer_actor._src.checkpoint import restore_checkpoint as restore_checkpoint
from dreamer_actor._src.checkpoint import save_checkpoint as save_checkpoint
from dreamer_actor._src.checks import checked_act as checked_act
from dreamer_actor._src.checks import checked_log_prob as checked_log_prob
from dreamer_actor._src.config import ActorConfig as ActorConfig
from dreamer_actor._src.estimators import policy_loss as policy_loss
from dreamer_actor._src.losses import actor_loss as actor_loss
from dreamer_actor._src.networks import Actor as Actor
from dreamer_actor._src.normalizer import ReturnNormalizer as ReturnNormalizer
from dreamer_actor._src.normalizer import ReturnNormalizerState as ReturnNormalizerState
from dreamer_actor._src.normalizer import normalize_advantage as normalize_advantage
from dreamer_actor._src.policy import policy_entropy as policy_entropy
from dreamer_actor._src.policy import policy_head as policy_head
from dreamer_actor._src.policy import policy_log_prob as policy_log_prob
from dreamer_actor._src.policy import policy_mode as policy_mode
from dreamer_actor._src.policy import policy_sample as policy_sample
from dreamer_actor._src.returns import imagination_weights as imagination_weights
from dreamer_actor._src.returns import lambda_returns as lambda_returns
from dreamer_actor._src.tanh_normal_api import entropy_estimate as entropy_estimate
from dreamer_actor._src.tanh_normal_api import log_prob_with_tanh_correction as log_prob_with_tanh_correction
from dreamer_actor._src.tanh_normal_api import sample_action as sample_action
from dreamer_actor._src.train import make_actor_train_step as make_actor_train_step

__version__ = "0.2.0"

__all__ = (
    "Actor",
    "ActorConfig",
    "ActorOutput",
    "Checkpoint",
    "ReturnNormalizer",
    "ReturnNormalizerState",
    "act",
    "actor_loss",
    "bounded_normal",
    "categorical",
    "checked_act",
    "checked_log_prob",
    "distributions",
    "entropy_estimate",
    "imagination_weights",
    "lambda_returns",
    "log_prob_with_tanh_correction",
    "make_actor_train_step",
    "networks",
    "normalize_advantage",
    "policy_entropy",
    "policy_head",
    "policy_log_prob",
    "policy_loss",
    "policy_mode",
    "policy_sample",
    "restore_checkpoint",
    "sample_action",
    "save_checkpoint",
    "tanh_normal",
    "train",
)
