"""dreamer_actor: the actor (policy) of a JAX Dreamer agent."""

import warnings as _warnings

# distrax imports tfp-nightly, whose own imports raise DeprecationWarnings that are
# not ours to fix; import it once here with them silenced.
with _warnings.catch_warnings():
    _warnings.simplefilter("ignore", DeprecationWarning)
    import distrax as _distrax  # noqa: F401

from dreamer_actor._src.act import ActorOutput as ActorOutput
from dreamer_actor._src.act import act as act
from dreamer_actor._src.checkpoint import Checkpoint as Checkpoint
from dreamer_actor._src.checkpoint import restore_checkpoint as restore_checkpoint
from dreamer_actor._src.checkpoint import save_checkpoint as save_checkpoint
from dreamer_actor._src.checks import checked_act as checked_act
from dreamer_actor._src.checks import checked_log_prob as checked_log_prob
from dreamer_actor._src.config import ActorConfig as ActorConfig
from dreamer_actor._src.distributions import bounded_normal_entropy as bounded_normal_entropy
from dreamer_actor._src.distributions import bounded_normal_log_prob as bounded_normal_log_prob
from dreamer_actor._src.distributions import bounded_normal_mode as bounded_normal_mode
from dreamer_actor._src.distributions import bounded_normal_params as bounded_normal_params
from dreamer_actor._src.distributions import bounded_normal_sample as bounded_normal_sample
from dreamer_actor._src.distributions import categorical_entropy as categorical_entropy
from dreamer_actor._src.distributions import categorical_log_prob as categorical_log_prob
from dreamer_actor._src.distributions import categorical_log_probs as categorical_log_probs
from dreamer_actor._src.distributions import categorical_mode as categorical_mode
from dreamer_actor._src.distributions import categorical_probs as categorical_probs
from dreamer_actor._src.distributions import categorical_sample as categorical_sample
from dreamer_actor._src.distributions import policy_entropy as policy_entropy
from dreamer_actor._src.distributions import policy_log_prob as policy_log_prob
from dreamer_actor._src.distributions import policy_mode as policy_mode
from dreamer_actor._src.distributions import policy_sample as policy_sample
from dreamer_actor._src.estimators import policy_loss as policy_loss
from dreamer_actor._src.losses import actor_loss as actor_loss
from dreamer_actor._src.networks import Actor as Actor
from dreamer_actor._src.networks import RMSNorm as RMSNorm
from dreamer_actor._src.networks import flatten_latent as flatten_latent
from dreamer_actor._src.noise import standard_normal as standard_normal
from dreamer_actor._src.normalizer import ReturnNormalizer as ReturnNormalizer
from dreamer_actor._src.normalizer import ReturnNormalizerState as ReturnNormalizerState
from dreamer_actor._src.normalizer import normalize_advantage as normalize_advantage
from dreamer_actor._src.returns import imagination_weights as imagination_weights
from dreamer_actor._src.returns import lambda_returns as lambda_returns
from dreamer_actor._src.tanh_normal import as_distrax as as_distrax
from dreamer_actor._src.tanh_normal import entropy_estimate as entropy_estimate
from dreamer_actor._src.tanh_normal import gaussian_entropy as gaussian_entropy
from dreamer_actor._src.tanh_normal import log1m_tanh_sq as log1m_tanh_sq
from dreamer_actor._src.tanh_normal import (
    log_prob_with_tanh_correction as log_prob_with_tanh_correction,
)
from dreamer_actor._src.tanh_normal import mode_action as mode_action
from dreamer_actor._src.tanh_normal import sample_action as sample_action
from dreamer_actor._src.tanh_normal import squash as squash
from dreamer_actor._src.tanh_normal import unsquash as unsquash
from dreamer_actor._src.train import act_per_example as act_per_example
from dreamer_actor._src.train import example_keys as example_keys
from dreamer_actor._src.train import make_actor_loss_fn as make_actor_loss_fn
from dreamer_actor._src.train import make_actor_train_step as make_actor_train_step

__version__ = "0.1.0"

__all__ = (
    "Actor",
    "ActorConfig",
    "ActorOutput",
    "Checkpoint",
    "RMSNorm",
    "ReturnNormalizer",
    "ReturnNormalizerState",
    "act",
    "act_per_example",
    "actor_loss",
    "as_distrax",
    "bounded_normal_entropy",
    "bounded_normal_log_prob",
    "bounded_normal_mode",
    "bounded_normal_params",
    "bounded_normal_sample",
    "categorical_entropy",
    "categorical_log_prob",
    "categorical_log_probs",
    "categorical_mode",
    "categorical_probs",
    "categorical_sample",
    "checked_act",
    "checked_log_prob",
    "entropy_estimate",
    "example_keys",
    "flatten_latent",
    "gaussian_entropy",
    "imagination_weights",
    "lambda_returns",
    "log1m_tanh_sq",
    "log_prob_with_tanh_correction",
    "make_actor_loss_fn",
    "make_actor_train_step",
    "mode_action",
    "normalize_advantage",
    "policy_entropy",
    "policy_log_prob",
    "policy_loss",
    "policy_mode",
    "policy_sample",
    "restore_checkpoint",
    "sample_action",
    "save_checkpoint",
    "squash",
    "standard_normal",
    "unsquash",
)
