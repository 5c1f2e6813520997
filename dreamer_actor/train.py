"""The actor's training step and its parts, for `jit` and sharded batches; `ESTIMATORS` names
`policy_loss`'s actor-gradient estimators."""

from dreamer_actor._src.estimators import ESTIMATORS as ESTIMATORS
from dreamer_actor._src.train import act_per_example as act_per_example
from dreamer_actor._src.train import example_keys as example_keys
from dreamer_actor._src.train import make_actor_loss_fn as make_actor_loss_fn
from dreamer_actor._src.train import make_actor_train_step as make_actor_train_step

__all__ = ("ESTIMATORS", "act_per_example", "example_keys", "make_actor_loss_fn", "make_actor_train_step")
