r"""albert: ALBERT's factorized embedding (Lan et al. 2020), E = model.embed.rank.

  A: VxE, P: ExD, b: D    x = A[ids] P + b
  tied head, `albert_head='mlm'` (ALBERT's MLM head; M: DxE, c: E, LN_E, o: V):
      logits = LN_E(gelu(x M + c)) A^T + o
  `albert_head='transpose'`: logits = (x P^T) A^T

Init (sigma^2 = 1/D): A ~ N(0, D sigma^2 / E), P with random orthonormal rows (entries of
variance 1/D, no spread in row norms), b = 0: Var(A[i] P) = E (D sigma^2 / E) / D = sigma^2.
MLM head: LN_E's output has unit variance, so Var(logit) = E Var(A) = D sigma^2; transpose
head: Var(x P^T) = 1, Var(logit) = E Var(A) = D sigma^2.

Parameters: V E + E D + D; the MLM head adds D E + E (dense) + 2 E (LayerNorm) + V (the
output bias, a unigram prior the other kinds lack); the transpose head adds none. An untied
head of kind albert (`lookup=False`) holds what its head uses: A and the MLM head, or A and P
for the transpose head; never b. FLOPs per
token: lookup 2 E D; tied head 2 D E + 2 E V (either head). Decay: A and b, so A P + 1 b^T
shrinks by (1 - lr wd) as a dense W does (P is not decayed); the MLM head is a head.
Spectrum factors: [[A 1], [P; b]] (the bias is a rank-one part of the table).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base

ALBERT_HEADS = ('mlm', 'transpose')


class AlbertEmbedding(nnx.Module):
  """ALBERT's ExH factorization: x = A[ids] P + b; tied head per `mlm_head`."""

  TABLE_PARAMS = ('A_VxE', 'P_ExD', 'b_D')
  TABLE_DECAY = ('A_VxE', 'b_D')  # A P + 1 b^T shrinks by (1 - lr wd), as a dense W does

  def __init__(self, vocab_size: int, model_dim: int, width: int, *, mlm_head: bool,
               dtype: str, rngs: nnx.Rngs, lookup: bool = True):
    self.dtype = base.compute_dtype(dtype)
    self.A_VxE = nnx.Param(base.normal(rngs, (vocab_size, width), 1.0 / width))  # D sigma^2/E
    # Only what is used is built, so every parameter gets a gradient: a head alone
    # (lookup=False) has no b, and with the MLM head no P.
    if lookup or not mlm_head:
      self.P_ExD = nnx.Param(base.orthonormal_rows(rngs, width, model_dim))
    if lookup:
      self.b_D = nnx.Param(jnp.zeros((model_dim,), jnp.float32))
    self.mlm_head = mlm_head
    if self.mlm_head:
      self.mlm_dense = nnx.Linear(model_dim, width, dtype=self.dtype, rngs=rngs)
      self.mlm_norm = nnx.LayerNorm(width, dtype=self.dtype, rngs=rngs)
      self.mlm_bias_V = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = A[ids] P + b in the compute dtype."""
    a_BxLxE = self.A_VxE[...][ids_BxL].astype(self.dtype)
    return a_BxLxE @ self.P_ExD[...].astype(self.dtype) + self.b_D[...].astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV through ALBERT's MLM head (or x P^T A^T), float32."""
    x_BxLxD = x_BxLxD.astype(self.dtype)
    if self.mlm_head:
      h_BxLxE = self.mlm_norm(jax.nn.gelu(self.mlm_dense(x_BxLxD), approximate=True))
      return base.project_to_vocab(h_BxLxE, self.A_VxE[...]) + self.mlm_bias_V[...]
    h_BxLxE = jnp.einsum('...d,ed->...e', x_BxLxD, self.P_ExD[...].astype(self.dtype))
    return base.project_to_vocab(h_BxLxE, self.A_VxE[...])

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[[A 1], [P; b]] (Vx(E+1), (E+1)xD): the bias is a rank-one part of the table (the
    input side's, so of an instance built with `lookup`)."""
    a_VxE, b_D = self.A_VxE[...], self.b_D[...]
    ones_Vx1 = jnp.ones((a_VxE.shape[0], 1), a_VxE.dtype)
    return [jnp.concatenate([a_VxE, ones_Vx1], 1),
            jnp.concatenate([self.P_ExD[...], b_D[None]], 0)]


@base.register('albert', order=10, module=AlbertEmbedding, rank_label='E',
               fields={'albert_head': 'mlm'})  # mlm (ALBERT's MLM head) | transpose
class AlbertConfig(base.KindConfig):
  """albert: width E = model.embed.rank in [1, D]; the tied head per model.embed.albert_head."""

  rank: int
  albert_head: str

  @classmethod
  def parse(cls, embed, **common) -> AlbertConfig:
    if embed.albert_head not in ALBERT_HEADS:
      raise ValueError(f'model.embed.albert_head={embed.albert_head!r} is unknown; '
                       f'allowed: {"|".join(ALBERT_HEADS)}.')
    rank = base.check_rank(embed.rank, cls.name, common['model_dim'], 'model_dim')
    return cls(rank=rank, albert_head=embed.albert_head, **common)

  @property
  def mlm_head(self) -> bool:
    """Whether the module builds ALBERT's MLM head (tied head, albert_head='mlm')."""
    return self.tied and self.albert_head == 'mlm'

  def param_counts(self) -> dict[str, int]:
    vocab, dim, width = self.vocab_size, self.model_dim, self.rank
    mlm = dim * width + width + 2 * width + vocab if self.mlm_head else 0
    if not self.lookup:  # A, and P for the transpose head (the MLM head has its own D -> E)
      return {'embedding': vocab * width + (0 if self.mlm_head else width * dim),
              'tied_head': mlm}
    return {'embedding': vocab * width + width * dim + dim, 'tied_head': mlm}

  def flops_per_token(self) -> dict[str, int]:
    # Either head: D -> E (the MLM head's dense layer, or x P^T), then E -> V.
    return {'embedding': 2 * self.rank * self.model_dim,
            'tied_head': 2 * self.model_dim * self.rank + 2 * self.rank * self.vocab_size}

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    shapes = {('A_VxE',): (self.vocab_size, self.rank)}
    if self.lookup or not self.mlm_head:
      shapes[('P_ExD',)] = (self.rank, self.model_dim)
    if self.lookup:
      shapes[('b_D',)] = (self.model_dim,)
    return shapes

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> AlbertEmbedding:
    if dense_table is not None:
      raise ValueError("dense_table initialisation needs model.embed.kind='svd' (or 'dense', "
                       "'adaptive'), not 'albert'.")
    return AlbertEmbedding(self.vocab_size, self.model_dim, self.rank, mlm_head=self.mlm_head,
                           dtype=self.dtype, rngs=rngs, lookup=self.lookup)
