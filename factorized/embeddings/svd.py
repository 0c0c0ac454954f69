r"""svd: a U diag(s) V factorization of the table, R = model.embed.rank.

  U: VxR, s: R, V: RxD    x = (U[ids] * s) V    logits = ((x V^T) * s) U^T

Init (sigma^2 = 1/D):
  lambda = 0: U ~ N(0, D sigma^2 / R), s = 1, V with random orthonormal rows (ALBERT's split,
      so Adam moves U s V about as fast as it moves a dense table).
  lambda > 0: U = sqrt(V/R) Q with Q orthonormal columns, s = 1, so the penalty (on
      Q = U sqrt(R/V), below) starts at 0, U's entries have the lambda = 0 scale (and Adam
      moves the table as fast as at lambda = 0), and s sqrt(V/R) are the table's singular
      values while the constraint holds.
  Both give Var(x) = R Var(U) s^2 / D = sigma^2 and Var(logit) = D sigma^2.
From a dense table (`dense_table=`, post-hoc compression), W = Q_U S Q_V (its rank-R
truncated SVD, Eckart-Young), split so that one Adam step moves U s V about as far as it
moves a dense table (a plain split, U = Q_U and s = S, moves it 18-30x as far: U's entries
are ~1/sqrt(V), and every one moves by the learning rate):
  lambda = 0: direction r gets |U_r|^2 = c_r^2 / (D S_r^2), |V_r|^2 = c_r^2 / (V S_r^2) and
      s_r = S_r / sqrt(c_r), c_r = (V D S_r^4)^(1/3): with every entry moving by the learning
      rate, the first step moves the table by about
      lr^2 sum_r (V |V_r|^2 s_r^2 + D |U_r|^2 s_r^2 + |U_r|^2 |V_r|^2) (U, V and s terms),
      which these minimise (the three terms equal, c_r each) under |U_r| |V_r| s_r = S_r;
  lambda > 0: U = sqrt(V/R) Q_U, s = S sqrt(R/V), V = Q_V.

Penalty lambda (|(R/V) U^T U - I|^2 + |V V^T - I|^2) (`ortho_penalty`) makes s sqrt(V/R)
readable as singular values. Parameters V R + R + R D; the tied head adds none. FLOPs per
token: lookup 2 R D; tied head 2 D R + 2 R V. Decay: s alone, so U diag(s) V shrinks by
(1 - lr wd) while U and V keep their penalty's scale. Spectrum factors: [U s, V].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base


class SVDEmbedding(nnx.Module):
  """A U diag(s) V factorization: x = (U[ids] * s) V, logits = ((x V^T) * s) U^T."""

  TABLE_PARAMS = ('U_VxR', 's_R', 'V_RxD')
  TABLE_DECAY = ('s_R',)  # U diag(s) V shrinks by (1 - lr wd); U, V keep their penalty's scale

  def __init__(self, vocab_size: int, model_dim: int, rank: int, *, ortho_penalty: float,
               dtype: str, rngs: nnx.Rngs, dense_table: jax.typing.ArrayLike | None = None):
    self.dtype = base.compute_dtype(dtype)
    self.ortho_penalty = float(ortho_penalty)
    # U = sqrt(V/R) Q, Q with orthonormal columns, when the penalty holds (see the docstring).
    self.u_scale = math.sqrt(vocab_size / rank)
    if dense_table is not None:
      svd = base.truncated_svd(base.checked_table(dense_table, vocab_size, model_dim), rank)
      u_VxR, s_R, v_RxD = self._split(svd['U'], svd['s'], svd['V'])
    else:
      v_RxD = base.orthonormal_rows(rngs, rank, model_dim)
      if self.ortho_penalty > 0:  # Start on the constraint set.
        u_VxR = self.u_scale * base.orthonormal_rows(rngs, rank, vocab_size).T
      else:
        u_VxR = base.normal(rngs, (vocab_size, rank), 1.0 / rank)  # D sigma^2 / R
      s_R = jnp.ones((rank,), jnp.float32)
    self.U_VxR = nnx.Param(jnp.asarray(u_VxR, jnp.float32))
    self.s_R = nnx.Param(jnp.asarray(s_R, jnp.float32))
    self.V_RxD = nnx.Param(jnp.asarray(v_RxD, jnp.float32))

  def _split(self, q_VxR: np.ndarray, sv_R: np.ndarray, q_RxD: np.ndarray):
    """U, s, V with U diag(s) V = Q_U diag(S) Q_V, balanced as the docstring says."""
    vocab_size, dim = q_VxR.shape[0], q_RxD.shape[1]
    if self.ortho_penalty > 0:
      return self.u_scale * q_VxR, sv_R / self.u_scale, q_RxD
    sv_R = sv_R.astype(np.float64)
    floor_R = np.maximum(sv_R, 1e-6 * sv_R.max())  # a zero direction keeps U_r, V_r; s_r = 0
    c_R = np.cbrt(vocab_size * dim * floor_R ** 4)
    return (q_VxR * (c_R / (floor_R * math.sqrt(dim))), sv_R / np.sqrt(c_R),
            (c_R / (floor_R * math.sqrt(vocab_size)))[:, None] * q_RxD)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = (U[ids] * s) V in the compute dtype."""
    u_BxLxR = (self.U_VxR[...][ids_BxL] * self.s_R[...]).astype(self.dtype)
    return u_BxLxR @ self.V_RxD[...].astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = ((x V^T) * s) U^T, float32."""
    h_BxLxR = jnp.einsum('...d,rd->...r', x_BxLxD.astype(self.dtype),
                         self.V_RxD[...].astype(self.dtype))
    return base.project_to_vocab(h_BxLxR * self.s_R[...].astype(self.dtype), self.U_VxR[...])

  def penalty(self) -> jax.Array:
    """lambda (|Q^T Q - I|^2 + |V V^T - I|^2), Q = U sqrt(R/V), float32 (0 when lambda = 0)."""
    if self.ortho_penalty == 0:
      return jnp.zeros((), jnp.float32)
    u_VxR, v_RxD = self.U_VxR[...] / self.u_scale, self.V_RxD[...]
    eye_RxR = jnp.eye(u_VxR.shape[1], dtype=jnp.float32)
    return self.ortho_penalty * (jnp.sum(jnp.square(u_VxR.T @ u_VxR - eye_RxR))
                                 + jnp.sum(jnp.square(v_RxD @ v_RxD.T - eye_RxR)))

  def factors(self) -> list[jax.Array]:
    """[U * s, V] (VxR, RxD)."""
    return [self.U_VxR[...] * self.s_R[...], self.V_RxD[...]]


@base.register('svd', order=20, module=SVDEmbedding, rank_label='R',
               fields={'ortho_penalty': 0.0})  # lambda of (|U^T U - I|^2 + |V V^T - I|^2)
class SVDConfig(base.KindConfig):
  """svd: rank R = model.embed.rank in [1, min(V, D)]; model.embed.ortho_penalty >= 0."""

  rank: int
  ortho_penalty: float = 0.0

  @classmethod
  def parse(cls, embed, **common) -> SVDConfig:
    if embed.ortho_penalty < 0:
      raise ValueError(f'model.embed.ortho_penalty={embed.ortho_penalty!r} must be >= 0.')
    limit = min(common['vocab_size'], common['model_dim'])
    rank = base.check_rank(embed.rank, cls.name, limit, 'min(vocab_size, model_dim)')
    return cls(rank=rank, ortho_penalty=float(embed.ortho_penalty), **common)

  def param_counts(self) -> dict[str, int]:
    rank = self.rank
    return {'embedding': self.vocab_size * rank + rank + rank * self.model_dim, 'tied_head': 0}

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 2 * self.rank * self.model_dim,
            'tied_head': 2 * self.model_dim * self.rank + 2 * self.rank * self.vocab_size}

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    return {('U_VxR',): (self.vocab_size, self.rank), ('s_R',): (self.rank,),
            ('V_RxD',): (self.rank, self.model_dim)}

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> SVDEmbedding:
    return SVDEmbedding(self.vocab_size, self.model_dim, self.rank,
                        ortho_penalty=self.ortho_penalty, dtype=self.dtype, rngs=rngs,
                        dense_table=dense_table)
