"""The optimizer: AdamW with linear warm-up then cosine decay, and global-norm clipping.

Weight decay applies to matrices only (ndim >= 2): LayerNorm scales, biases and the
`svd` diagonal s are 1-D and are not decayed.
"""

from __future__ import annotations

import jax
import ml_collections
import optax


def validate_train_config(train_config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the first `train.*` field that is out of range."""
  positive = ('num_steps', 'batch_size', 'grad_accum_steps', 'eval_every', 'eval_batch_size',
              'ckpt_every', 'keep_checkpoints', 'log_every')
  for name in positive:
    value = train_config[name]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'train.{name}={value!r} must be a positive integer.')
  if train_config.batch_size % train_config.grad_accum_steps:
    raise ValueError(
        f'train.batch_size={train_config.batch_size} must be divisible by '
        f'train.grad_accum_steps={train_config.grad_accum_steps}.')
  if not train_config.lr > 0:
    raise ValueError(f'train.lr={train_config.lr} must be > 0.')
  if not 0 <= train_config.min_lr_ratio <= 1:
    raise ValueError(f'train.min_lr_ratio={train_config.min_lr_ratio} must be in [0, 1].')
  if not 0 <= train_config.warmup_steps < train_config.num_steps:
    raise ValueError(
        f'train.warmup_steps={train_config.warmup_steps} must be in '
        f'[0, train.num_steps={train_config.num_steps}).')
  if train_config.weight_decay < 0:
    raise ValueError(f'train.weight_decay={train_config.weight_decay} must be >= 0.')
  if not train_config.grad_clip > 0:
    raise ValueError(f'train.grad_clip={train_config.grad_clip} must be > 0.')
  for name in ('b1', 'b2'):
    if not 0 <= train_config[name] < 1:
      raise ValueError(f'train.{name}={train_config[name]} must be in [0, 1).')


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine decay to `lr * min_lr_ratio`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=train_config.lr,
      warmup_steps=train_config.warmup_steps,
      decay_steps=train_config.num_steps,
      end_value=train_config.lr * train_config.min_lr_ratio,
  )


def decay_mask(params):
  """True for the parameters that weight decay applies to: those with ndim >= 2."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW under the warm-up/cosine schedule."""
  return optax.chain(
      optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(
          learning_rate=learning_rate_schedule(train_config),
          b1=train_config.b1,
          b2=train_config.b2,
          weight_decay=train_config.weight_decay,
          mask=decay_mask,
      ),
  )
