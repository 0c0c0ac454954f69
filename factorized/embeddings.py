r"""Three parameterisations of the token embedding, behind one interface.

Shapes: B batch, L length, D model width (`model.model_dim`), V vocabulary,
E ALBERT width and R SVD rank (both `model.embed.rank`).

Every module maps `__call__(ids_BxL) -> x_BxLxD` (compute dtype) and, for the
tied output head, `attend(x_BxLxD) -> logits_BxLxV` (float32):

  dense   W: VxD                 x = W[ids]              logits = x W^T
  albert  A: VxE, P: ExD, b: D   x = A[ids] P + b        logits = LN_E(gelu(x M + c)) A^T + o
          (ALBERT's MLM head, `albert_head='mlm'`: M DxE, c E, LN_E, o V), or
          logits = (x P^T) A^T  (`albert_head='transpose'`)
  svd     U: VxR, s: R, V: RxD   x = (U[ids] * s) V      logits = ((x V^T) * s) U^T

The factorized kinds never build the VxD matrix: lookups gather rows of A or U
(BxLxE/R) and heads contract x with the small factor first, so the forward and
the backward intermediates are at most BxLxR, VxR or RxD.

Initialisation (sigma^2 = 1/D): every kind gives the lookup per-coordinate
variance sigma^2 and, for unit-variance x (the final LayerNorm's output), tied
logits of variance D sigma^2 = 1, at every rank. P and V start with random
orthonormal rows (entries of variance 1/D, but no spread in row norms, which
would otherwise make the logit scale noisy at small ranks):
  dense   W ~ N(0, sigma^2).
  albert  A ~ N(0, D sigma^2 / E), P orthonormal rows, b = 0: Var(A[i] P) = E (D sigma^2/E)/D.
          MLM head: LN_E's output has unit variance, so Var(logit) = E Var(A) = D sigma^2;
          transpose head: Var(x P^T) = 1, Var(logit) = E Var(A) = D sigma^2.
  svd     lambda = 0: U ~ N(0, D sigma^2 / R), s = 1, V orthonormal rows (ALBERT's split, so
          Adam moves U s V about as fast as it moves a dense table).
          lambda > 0: U = sqrt(V/R) Q with Q orthonormal columns, s = 1, so the penalty
          (on Q = U sqrt(R/V), see below) starts at 0, U's entries have the lambda = 0 scale
          (and Adam moves the table as fast as at lambda = 0), and s sqrt(V/R) are the
          table's singular values while the constraint holds.
          Both give Var(x) = R Var(U) s^2 / D = sigma^2 and Var(logit) = D sigma^2.
  svd from a dense table (`dense_table=`), W = Q_U S Q_V (its rank-R truncated SVD,
          Eckart-Young), split so that one Adam step moves U s V about as far as it moves a
          dense table (a plain split, U = Q_U and s = S, moves it 18-30x as far: U's entries
          are ~1/sqrt(V), and every one moves by the learning rate):
          lambda = 0: direction r gets |U_r|^2 = c_r^2 / (D S_r^2), |V_r|^2 = c_r^2 / (V S_r^2)
          and s_r = S_r / sqrt(c_r), c_r = (V D S_r^4)^(1/3): with every entry moving by the
          learning rate, the first step moves the table by about
          lr^2 sum_r (V |V_r|^2 s_r^2 + D |U_r|^2 s_r^2 + |U_r|^2 |V_r|^2) (U, V and s terms),
          which these minimise (the three terms equal, c_r each) under |U_r| |V_r| s_r = S_r;
          lambda > 0: U = sqrt(V/R) Q_U, s = S sqrt(R/V), V = Q_V.
The untied head (model.py) is a DxV matrix ~ N(0, 1/D): the same logit scale.
model.py scales x by 0.02 sqrt(D) before the blocks (see there why).

Output-head bookkeeping (costs.py): the tied dense and svd heads, and ALBERT's
transpose head, add no parameters; ALBERT's MLM head adds M, c, LN_E and o.
The penalty lambda (|(R/V) U^T U - I|^2 + |V V^T - I|^2) (`embed.ortho_penalty`) makes
s sqrt(V/R) readable as singular values; `penalty()` is 0 for the other kinds.

Weight decay (optim.py, `train.embed_decay`): each class names its table's parameters
(`TABLE_PARAMS`) and the ones whose decoupled decay shrinks the whole table by the same
factor (1 - lr wd) as decay shrinks a dense W (`TABLE_DECAY`): W; A and b (P is not
decayed); s (U and V are not). Decaying every factor matrix instead (`factors`, the old
default) shrinks U s V and A P twice as fast as a dense table.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

KINDS = ('dense', 'albert', 'svd')
HEADS = ('tied', 'untied')
ALBERT_HEADS = ('mlm', 'transpose')
POSITIONS = ('rope', 'learned')
DTYPES = ('float32', 'bfloat16')


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive_int(value, field: str, fix: str) -> None:
  if not _is_int(value) or value <= 0:
    raise ValueError(f'{field}={value!r} must be a positive integer; {fix}.')


def validate_model_config(model_config: ml_collections.ConfigDict, vocab_size: int) -> None:
  """Raises a ValueError naming the field, its value and the allowed range."""
  embed = model_config.embed
  _positive_int(vocab_size, 'vocab_size', 'it comes from the prepared corpus')
  for field in ('model_dim', 'num_layers', 'num_heads', 'mlp_dim'):
    _positive_int(model_config[field], f'model.{field}', 'set it to an integer >= 1')
  if embed.kind not in KINDS:
    raise ValueError(f'model.embed.kind={embed.kind!r} is unknown; allowed: {"|".join(KINDS)}.')
  if embed.head not in HEADS:
    raise ValueError(f'model.embed.head={embed.head!r} is unknown; allowed: {"|".join(HEADS)}.')
  if embed.albert_head not in ALBERT_HEADS:
    raise ValueError(f'model.embed.albert_head={embed.albert_head!r} is unknown; '
                     f'allowed: {"|".join(ALBERT_HEADS)}.')
  if model_config.positions not in POSITIONS:
    raise ValueError(f'model.positions={model_config.positions!r} is unknown; '
                     f'allowed: {"|".join(POSITIONS)}.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'model.dtype={model_config.dtype!r} is unknown; allowed: {"|".join(DTYPES)}.')
  if not 0.0 <= model_config.dropout < 1.0:
    raise ValueError(f'model.dropout={model_config.dropout!r} must lie in [0, 1).')
  if embed.ortho_penalty < 0:
    raise ValueError(f'model.embed.ortho_penalty={embed.ortho_penalty!r} must be >= 0.')
  dim, heads = model_config.model_dim, model_config.num_heads
  if dim % heads or (model_config.positions == 'rope' and (dim // heads) % 2):
    raise ValueError(f'model.num_heads={heads} must divide model.model_dim={dim} into '
                     'heads of even width (RoPE rotates pairs); pick another num_heads.')
  if embed.kind == 'dense':
    return  # model.embed.rank is ignored.
  limit, what = ((dim, 'model_dim') if embed.kind == 'albert'
                 else (min(vocab_size, dim), 'min(vocab_size, model_dim)'))
  rank = embed.rank
  if not _is_int(rank) or not 1 <= rank <= limit:
    raise ValueError(f'model.embed.rank={rank!r} is out of range for kind={embed.kind!r}: '
                     f'it must be an integer in [1, {what}={limit}].')


def compute_dtype(model_config: ml_collections.ConfigDict) -> jnp.dtype:
  """The compute dtype named by `model.dtype` (parameters stay float32)."""
  return jnp.dtype(model_config.dtype)


def project_to_vocab(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  """logits_BxLxV = h table^T in h's dtype with float32 output (a VxK table: XLA's CPU
  matmuls run this layout ~1.7x faster than h times a KxV matrix)."""
  return _logits(h_BxLxK, table_VxK.astype(h_BxLxK.dtype))


def _plain_logits(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  return jnp.einsum('...k,vk->...v', h_BxLxK, table_VxK, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _logits(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  return _plain_logits(h_BxLxK, table_VxK)


def _logits_fwd(h_BxLxK: jax.Array, table_VxK: jax.Array):
  return _plain_logits(h_BxLxK, table_VxK), (h_BxLxK, table_VxK)


def _logits_bwd(residuals, g_BxLxV: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Autodiff's own gradients, but the table's computed as (h^T g)^T: left to itself, XLA
  computes g^T h and, its CPU matmuls wanting the contracted axis innermost, first copies
  the BxLxV g into VxBL (the largest array of the step); h^T g needs only h^T and a VxK
  transpose of the result. The barrier stops XLA from folding that transpose back in."""
  h_BxLxK, table_VxK = residuals
  _, h_vjp = jax.vjp(lambda h_BxLxK: _plain_logits(h_BxLxK, table_VxK), h_BxLxK)
  # One contracted axis (BL, not B and L): only then does XLA pick its fast matmul here.
  h_NxK = h_BxLxK.reshape(-1, h_BxLxK.shape[-1])
  _, table_t_vjp = jax.vjp(
      lambda t_KxV: jnp.einsum('nk,kv->nv', h_NxK, t_KxV, preferred_element_type=jnp.float32),
      table_VxK.T)
  (dtable_KxV,) = table_t_vjp(g_BxLxV.reshape(h_NxK.shape[0], -1))
  return h_vjp(g_BxLxV)[0], jax.lax.optimization_barrier(dtable_KxV).T


_logits.defvjp(_logits_fwd, _logits_bwd)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], variance: float) -> jax.Array:
  return jax.random.normal(rngs.params(), shape, jnp.float32) * math.sqrt(variance)


def _orthonormal_rows(rngs: nnx.Rngs, rows: int, cols: int) -> jax.Array:
  """A random rows x cols (rows <= cols) matrix with orthonormal rows: entry variance 1/cols."""
  q_CxR, r_RxR = jnp.linalg.qr(jax.random.normal(rngs.params(), (cols, rows), jnp.float32))
  return (q_CxR * jnp.sign(jnp.diagonal(r_RxR))).T  # Sign fix: Haar-distributed.


class DenseEmbedding(nnx.Module):
  """A full VxD table W: x = W[ids], logits = x W^T."""

  TABLE_PARAMS = ('W_VxD',)
  TABLE_DECAY = ('W_VxD',)

  def __init__(self, model_config: ml_collections.ConfigDict, vocab_size: int, *,
               rngs: nnx.Rngs, dense_table: jax.typing.ArrayLike | None = None):
    validate_model_config(model_config, vocab_size)
    dim = model_config.model_dim
    self.dtype = compute_dtype(model_config)
    if dense_table is None:
      table_VxD = _normal(rngs, (vocab_size, dim), 1.0 / dim)
    else:
      table_VxD = jnp.asarray(_checked_table(dense_table, vocab_size, dim))
    self.W_VxD = nnx.Param(table_VxD)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = W[ids] in the compute dtype."""
    return self.W_VxD[...][ids_BxL].astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = x W^T, float32."""
    return project_to_vocab(x_BxLxD.astype(self.dtype), self.W_VxD[...])

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[W]."""
    return [self.W_VxD[...]]


class AlbertEmbedding(nnx.Module):
  """ALBERT's ExH factorization: x = A[ids] P + b; tied head per `albert_head`."""

  TABLE_PARAMS = ('A_VxE', 'P_ExD', 'b_D')
  TABLE_DECAY = ('A_VxE', 'b_D')  # A P + 1 b^T shrinks by (1 - lr wd), as a dense W does

  def __init__(self, model_config: ml_collections.ConfigDict, vocab_size: int, *,
               rngs: nnx.Rngs, dense_table: jax.typing.ArrayLike | None = None):
    validate_model_config(model_config, vocab_size)
    if dense_table is not None:
      raise ValueError("dense_table initialisation needs model.embed.kind='svd' (or 'dense'), "
                       "not 'albert'.")
    dim, width = model_config.model_dim, model_config.embed.rank
    self.dtype = compute_dtype(model_config)
    self.A_VxE = nnx.Param(_normal(rngs, (vocab_size, width), 1.0 / width))  # D sigma^2 / E
    self.P_ExD = nnx.Param(_orthonormal_rows(rngs, width, dim))
    self.b_D = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.mlm_head = (model_config.embed.head == 'tied'
                     and model_config.embed.albert_head == 'mlm')
    if self.mlm_head:  # Only built when used, so every parameter gets a gradient.
      self.mlm_dense = nnx.Linear(dim, width, dtype=self.dtype, rngs=rngs)
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
      return project_to_vocab(h_BxLxE, self.A_VxE[...]) + self.mlm_bias_V[...]
    h_BxLxE = jnp.einsum('...d,ed->...e', x_BxLxD, self.P_ExD[...].astype(self.dtype))
    return project_to_vocab(h_BxLxE, self.A_VxE[...])

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[[A 1], [P; b]] (Vx(E+1), (E+1)xD): the bias is a rank-one part of the table."""
    a_VxE, b_D = self.A_VxE[...], self.b_D[...]
    ones_Vx1 = jnp.ones((a_VxE.shape[0], 1), a_VxE.dtype)
    return [jnp.concatenate([a_VxE, ones_Vx1], 1),
            jnp.concatenate([self.P_ExD[...], b_D[None]], 0)]


class SVDEmbedding(nnx.Module):
  """A U diag(s) V factorization: x = (U[ids] * s) V, logits = ((x V^T) * s) U^T."""

  TABLE_PARAMS = ('U_VxR', 's_R', 'V_RxD')
  TABLE_DECAY = ('s_R',)  # U diag(s) V shrinks by (1 - lr wd); U, V keep their penalty's scale

  def __init__(self, model_config: ml_collections.ConfigDict, vocab_size: int, *,
               rngs: nnx.Rngs, dense_table: jax.typing.ArrayLike | None = None):
    validate_model_config(model_config, vocab_size)
    dim, rank = model_config.model_dim, model_config.embed.rank
    self.dtype = compute_dtype(model_config)
    self.ortho_penalty = float(model_config.embed.ortho_penalty)
    # U = sqrt(V/R) Q, Q with orthonormal columns, when the penalty holds (see the docstring).
    self.u_scale = math.sqrt(vocab_size / rank)
    if dense_table is not None:
      svd = svd_factors_from_dense(_checked_table(dense_table, vocab_size, dim), rank)
      u_VxR, s_R, v_RxD = self._split(svd['U'], svd['s'], svd['V'])
    else:
      v_RxD = _orthonormal_rows(rngs, rank, dim)
      if self.ortho_penalty > 0:  # Start on the constraint set.
        u_VxR = self.u_scale * _orthonormal_rows(rngs, rank, vocab_size).T
      else:
        u_VxR = _normal(rngs, (vocab_size, rank), 1.0 / rank)  # D sigma^2 / R
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
    return project_to_vocab(h_BxLxR * self.s_R[...].astype(self.dtype), self.U_VxR[...])

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


EMBEDDINGS = {'dense': DenseEmbedding, 'albert': AlbertEmbedding, 'svd': SVDEmbedding}


def _checked_table(table: jax.typing.ArrayLike, vocab_size: int, dim: int) -> np.ndarray:
  table = np.asarray(table, np.float32)  # a host constant, also while tracing (init_state)
  if table.shape != (vocab_size, dim):
    raise ValueError(f'dense_table has shape {table.shape}; it must be '
                     f'(vocab_size, model.model_dim)=({vocab_size}, {dim}).')
  return table


def svd_factors_from_dense(W_VxD: jax.typing.ArrayLike, rank: int) -> dict[str, np.ndarray]:
  """The rank-R truncated SVD of a dense table: dict(U=VxR, s=R, V=RxD), float32."""
  W_VxD = np.asarray(W_VxD, np.float64)
  if not 1 <= rank <= min(W_VxD.shape):
    raise ValueError(f'model.embed.rank={rank} must lie in [1, min(vocab_size, model_dim)='
                     f'{min(W_VxD.shape)}] to truncate a {W_VxD.shape} table.')
  u_VxK, s_K, v_KxD = np.linalg.svd(W_VxD, full_matrices=False)
  return {'U': u_VxK[:, :rank].astype(np.float32), 's': s_K[:rank].astype(np.float32),
          'V': v_KxD[:rank].astype(np.float32)}


def make_embedding(model_config: ml_collections.ConfigDict, vocab_size: int, *,
                   rngs: nnx.Rngs, dense_table: jax.typing.ArrayLike | None = None
                   ) -> nnx.Module:
  """Builds the embedding named by `model.embed.kind` (optionally from a dense table)."""
  validate_model_config(model_config, vocab_size)
  return EMBEDDINGS[model_config.embed.kind](
      model_config, vocab_size, rngs=rngs, dense_table=dense_table)
