"""The optimizer: AdamW with linear warm-up then cosine decay, and global-norm clipping.

Weight decay applies to matrices (ndim >= 2), not to LayerNorm scales and biases, except
for the embedding table's own parameters, where `train.embed_decay` decides:
  table    (default) the parameters each kind's module names in `TABLE_DECAY`
           (factorized/embeddings/): the decoupled decay then shrinks the table
           W = U diag(s) V, A P + b, the bands' A_b P_b or a product of TT cores by
           (1 - lr wd) per step, as it shrinks a dense W, so every kind's table is
           regularised alike;
  factors  every factor matrix (ndim >= 2: U and V, A and P, ...), as before this control
           existed: a factorized table shrinks about twice as fast as a dense one;
  none     no decay on the table's parameters.
Parameters the head adds (an untied W, ALBERT's MLM head) follow the general rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from factorized import embeddings
from factorized.config.build import TrainArgs
from factorized.model.transformer import ModelArgs
from factorized.train import inplace


def learning_rate_schedule(train_config: TrainArgs) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then cosine decay to `lr * min_lr_ratio`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=train_config.lr,
      warmup_steps=train_config.warmup_steps,
      decay_steps=train_config.num_steps,
      end_value=train_config.lr * train_config.min_lr_ratio,
  )


def _names(path: tuple, entries: tuple) -> bool:
  """Whether a parameter path below `embed` is named by `entries` (TABLE_PARAMS or
  TABLE_DECAY): an attribute name, or an (attribute, index, ...) path into it."""
  return any(path[:1] == (entry,) if isinstance(entry, str) else path[:len(entry)] == entry
             for entry in entries)


def decay_mask(params, *, kind: str, embed_decay: str = 'table', head_kind: str | None = None):
  """True for the parameters that weight decay applies to (see the module docstring);
  `head_kind`: an untied head of its own kind, whose table follows the same rule."""
  tables = {'embed': embeddings.kind(kind).module}
  if head_kind is not None:
    tables['head'] = embeddings.kind(head_kind).module

  def decayed(path, leaf) -> bool:
    names = tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))
    module = tables.get(names[0]) if names else None
    if module is not None and _names(names[1:], module.TABLE_PARAMS):
      if embed_decay == 'table':
        return _names(names[1:], module.TABLE_DECAY)
      return embed_decay == 'factors' and leaf.ndim >= 2
    return leaf.ndim >= 2

  return jax.tree_util.tree_map_with_path(decayed, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """optax.clip_by_global_norm(max_norm), element for element the same values (the same
  select between t and (t / norm) max_norm) and the same empty state, but each large leaf
  clipped in place a slice of rows at a time (factorized/train/inplace.py): under optax's, XLA
  keeps the clipped VxD table gradient beside the unclipped one, as both of Adam's
  moments read the two (tests/test_optim.py checks the values are optax's, bitwise)."""

  def update_fn(updates, state, params=None):
    del params
    g_norm = optax.tree.norm(updates)
    trigger = jnp.squeeze(g_norm < max_norm)

    def clip(t):
      return jax.lax.select(trigger, t, (t / g_norm.astype(t.dtype)) * max_norm)

    return jax.tree.map(lambda t: inplace.update_rows(clip, t), updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_optimizer(train: TrainArgs, model: ModelArgs) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW under the warm-up/cosine schedule (`train`),
  decaying the parameters that `decay_mask` picks for the model's embedding kind (and an
  untied head's own kind)."""
  return optax.chain(
      clip_by_global_norm(train.grad_clip),
      optax.adamw(
          learning_rate=learning_rate_schedule(train),
          b1=train.b1,
          b2=train.b2,
          weight_decay=train.weight_decay,
          mask=functools.partial(decay_mask, kind=model.embed.name,
                                 embed_decay=train.embed_decay,
                                 head_kind=None if model.head is None else model.head.name),
      ),
  )
