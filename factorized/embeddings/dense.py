r"""dense: a full VxD table, the baseline every other kind is compared with.

  W: VxD    x = W[ids]    logits = x W^T

Init W ~ N(0, sigma^2), sigma^2 = 1/D: Var(x) = sigma^2, Var(logit) = D sigma^2 = 1.
From a dense table (`dense_table=`): a copy. Parameters V D; FLOPs per token: the lookup
is a gather (0), the tied head 2 D V. Decay: W (TABLE_DECAY).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base


class DenseEmbedding(nnx.Module):
  """A full VxD table W: x = W[ids], logits = x W^T."""

  TABLE_PARAMS = ('W_VxD',)
  TABLE_DECAY = ('W_VxD',)
  LOGITS_TABLE = 'W_VxD'  # logits = project_to_vocab(x, W): model/loss.py slices its gradient

  def __init__(self, vocab_size: int, model_dim: int, *, dtype: str, rngs: nnx.Rngs,
               dense_table: jax.typing.ArrayLike | None = None):
    self.dtype = base.compute_dtype(dtype)
    if dense_table is None:
      table_VxD = base.normal(rngs, (vocab_size, model_dim), 1.0 / model_dim)
    else:
      table_VxD = jnp.asarray(base.checked_table(dense_table, vocab_size, model_dim))
    self.W_VxD = nnx.Param(table_VxD)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = W[ids] in the compute dtype."""
    return self.W_VxD[...][ids_BxL].astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = x W^T, float32."""
    return base.project_to_vocab(x_BxLxD.astype(self.dtype), self.W_VxD[...])

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[W]."""
    return [self.W_VxD[...]]


@base.register('dense', order=0, module=DenseEmbedding)
class DenseConfig(base.KindConfig):
  """dense: no rank (model.embed.rank is ignored)."""

  @classmethod
  def parse(cls, embed, **common) -> DenseConfig:
    return cls(**common)

  def param_counts(self) -> dict[str, int]:
    return {'embedding': self.vocab_size * self.model_dim, 'tied_head': 0}

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 0, 'tied_head': 2 * self.model_dim * self.vocab_size}

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    return {('W_VxD',): (self.vocab_size, self.model_dim)}

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> DenseEmbedding:
    return DenseEmbedding(self.vocab_size, self.model_dim, dtype=self.dtype, rngs=rngs,
                          dense_table=dense_table)
