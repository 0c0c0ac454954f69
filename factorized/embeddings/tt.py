r"""tt: a tensor-train (TT) embedding (Hrinchuk et al. 2020, tensorized embedding layers).

Shapes: N tokens (B L), V' the padded vocabulary, v_k, d_k the factors, r the bond ranks;
L / R the left and right blocks (V_L x D_L x r, r x V_R x D_R).

V is padded to V' = v_1 ... v_n >= V (`tt_vocab_factors`) and D = d_1 ... d_n
(`tt_dim_factors`). The table, indexed by the mixed-radix digits of the id (i_1 ... i_n,
most significant first) and of the coordinate (j_1 ... j_n), is a train of cores

  G_k: r_{k-1} x v_k x d_k x r_k  (r_0 = r_n = 1)
  W[(i_1..i_n), (j_1..j_n)] = G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] ... G_n[:, i_n, j_n, :]

with bond ranks r_k = min(R, m_1...m_k, m_{k+1}...m_n), m_k = v_k d_k, R = model.embed.rank
(the TT-rank): a larger bond adds parameters, not expressiveness (TT-SVD's bound).

Computation: once per call the cores are merged into two blocks at a cut c,
L = G_1..G_c (V_L x D_L x r_c) and R = G_{c+1}..G_n (r_c x V_R x D_R), both smaller than the
table (r_c below both sides' sizes).
  lookup     x[id] = L[i_L] R[:, i_R] (D_L x r_c times r_c x D_R): 2 D r_c FLOPs per token;
  tied head  all V' logits by contracting x (as D_L x D_R) through R, then L ("right
             first": 2 r_c (D V_R + V' D_L) FLOPs per token), or through L, then R ("left
             first": 2 r_c (D V_L + V' D_R)); the cut and the order are the cheapest of all
             that never build the table. The padding ids' logits are dropped. The
             intermediate (D_L r_c V_R or V_L r_c D_R per token) can be many times the
             logits, so tokens go through in chunks whose intermediate holds at most
             `chunk_elements` values, each chunk recomputed in the backward pass.

Auto factors (tt_vocab_factors=(), tt_dim_factors=()): 3 cores; V' from ceil(V^(1/3))
factors lowered one at a time while the product stays >= V (17,906 -> 27 x 26 x 26 =
18,252); D's prime factors dealt to the factor of smallest product (128 -> 4 x 4 x 8); v
descending and d ascending along the train. Given one list, the other gets its length.

Init (sigma^2 = 1/D): Gaussian cores scaled alike so that the padded table's Frobenius norm
(computed core by core with r x r transfer matrices, not from the table) is exactly
sqrt(V' D sigma^2): mean-square entry sigma^2, so Var(x) = sigma^2 and, the entries of a
row being uncorrelated, Var(logit) = D sigma^2.

Parameters sum_k r_{k-1} v_k d_k r_k; the tied head adds none. FLOPs per token as above
(the block merges are per call, not per token: not counted). Decay: the first core (the
table is linear in each core: decaying one shrinks it by (1 - lr wd)). Spectrum factors:
[W] (V x D, from the blocks, outside the loss): a TT matrix is in general of full rank, so
no thinner factors exist.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base

AUTO_CORES = 3
CHUNK_ELEMENTS = 2 ** 24  # the tied head's intermediate per chunk of tokens (64 MiB float32)
RIGHT_FIRST, LEFT_FIRST = 'right_first', 'left_first'


def _merge(cores: list[jax.Array]) -> jax.Array:
  """Cores a x v x d x b merged into one a x (v...) x (d...) x b block."""
  block = cores[0]
  for core in cores[1:]:
    a, v, d, _ = block.shape
    _, w, e, c = core.shape
    block = jnp.einsum('avdb,bwec->avwdec', block, core).reshape(a, v * w, d * e, c)
  return block


class TTEmbedding(nnx.Module):
  """A TT-matrix table: lookups and the tied head through two merged blocks of cores."""

  TABLE_PARAMS = ('G_RxVkxDkxR',)
  TABLE_DECAY = (('G_RxVkxDkxR', 0),)  # the table is linear in each core: decay the first

  def __init__(self, vocab_size: int, vocab_factors: tuple[int, ...],
               dim_factors: tuple[int, ...], bonds: tuple[int, ...], cut: int, order: str, *,
               dtype: str, rngs: nnx.Rngs, chunk_elements: int = CHUNK_ELEMENTS):
    self.dtype = base.compute_dtype(dtype)
    self.vocab_size, self.cut, self.order = vocab_size, cut, order
    self.chunk_elements = chunk_elements
    ranks = (1, *bonds, 1)
    shapes = [(ranks[k], v, d, ranks[k + 1])
              for k, (v, d) in enumerate(zip(vocab_factors, dim_factors, strict=True))]
    cores = [jax.random.normal(rngs.params(), shape, jnp.float32) for shape in shapes]
    transfer = jnp.ones((1, 1), jnp.float32)  # sum over a table prefix of (row slice)^T(...)
    for core in cores:
      transfer = jnp.einsum('ac,avdb,cvde->be', transfer, core, core)
    padded, dim = math.prod(vocab_factors), math.prod(dim_factors)
    scale = (padded / transfer[0, 0]) ** (0.5 / len(cores))  # |W|_F^2 = V' D sigma^2 = V'
    self.G_RxVkxDkxR = nnx.List([nnx.Param(core * scale) for core in cores])
    self.model_dim = dim

  def blocks(self) -> tuple[jax.Array, jax.Array]:
    """L (V_L x D_L x r) and R (r x V_R x D_R) in the compute dtype."""
    cores = [core[...] for core in self.G_RxVkxDkxR]
    left, right = _merge(cores[:self.cut]), _merge(cores[self.cut:])
    return left[0].astype(self.dtype), right[..., 0].astype(self.dtype)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = L[i_L] R[:, i_R] in the compute dtype."""
    left_VLxDLxR, right_RxVRxDR = self.blocks()
    ids_N = ids_BxL.reshape(-1)
    vocab_right = right_RxVRxDR.shape[1]
    x_NxDLxDR = jnp.einsum('nda,ane->nde', left_VLxDLxR[ids_N // vocab_right],
                           right_RxVRxDR[:, ids_N % vocab_right])
    return x_NxDLxDR.reshape(*ids_BxL.shape, self.model_dim)

  def _logits(self, x_NxDLxDR: jax.Array, left_VLxDLxR: jax.Array,
              right_RxVRxDR: jax.Array) -> jax.Array:
    """logits_NxVLxVR of a chunk of tokens, float32, in the configured order."""
    if self.order == RIGHT_FIRST:
      y_NxDLxRxVR = jnp.einsum('nde,aue->ndau', x_NxDLxDR, right_RxVRxDR)
      return jnp.einsum('ndau,tda->ntu', y_NxDLxRxVR, left_VLxDLxR,
                        preferred_element_type=jnp.float32)
    y_NxVLxRxDR = jnp.einsum('nde,tda->ntae', x_NxDLxDR, left_VLxDLxR)
    return jnp.einsum('ntae,aue->ntu', y_NxVLxRxDR, right_RxVRxDR,
                      preferred_element_type=jnp.float32)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = x W^T through the blocks (never W), float32."""
    left_VLxDLxR, right_RxVRxDR = self.blocks()
    (vocab_left, dim_left, rank), (_, vocab_right, dim_right) = (left_VLxDLxR.shape,
                                                                 right_RxVRxDR.shape)
    *batch, _ = x_BxLxD.shape
    x_NxDLxDR = x_BxLxD.astype(self.dtype).reshape(-1, dim_left, dim_right)
    tokens = x_NxDLxDR.shape[0]
    per_token = rank * (dim_left * vocab_right if self.order == RIGHT_FIRST
                        else vocab_left * dim_right)
    chunk = max(1, self.chunk_elements // per_token)
    if tokens <= chunk:
      logits_NxVLxVR = self._logits(x_NxDLxDR, left_VLxDLxR, right_RxVRxDR)
    else:
      chunks = -(-tokens // chunk)
      padded_NxDLxDR = jnp.pad(x_NxDLxDR, ((0, chunks * chunk - tokens), (0, 0), (0, 0)))
      step = jax.checkpoint(lambda x: self._logits(x, left_VLxDLxR, right_RxVRxDR))
      logits_NxVLxVR = jax.lax.map(step, padded_NxDLxDR.reshape(chunks, chunk, dim_left,
                                                                dim_right))
      logits_NxVLxVR = logits_NxVLxVR.reshape(-1, vocab_left, vocab_right)[:tokens]
    logits_NxV = logits_NxVLxVR.reshape(tokens, vocab_left * vocab_right)[:, :self.vocab_size]
    return logits_NxV.reshape(*batch, self.vocab_size)

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[W] (V x D, float32), from the blocks: a TT table has no thinner exact factors."""
    left_VLxDLxR, right_RxVRxDR = (jnp.asarray(block, jnp.float32) for block in self.blocks())
    table = jnp.einsum('tda,aue->tude', left_VLxDLxR, right_RxVRxDR)
    return [table.reshape(-1, self.model_dim)[:self.vocab_size]]


def auto_vocab_factors(vocab_size: int, cores: int) -> tuple[int, ...]:
  """`cores` near-equal factors, descending, whose product is the smallest found >= V."""
  side = 1
  while side ** cores < vocab_size:
    side += 1
  factors = [side] * cores
  lowered = True
  while lowered:
    lowered = False
    for k in reversed(range(cores)):
      if factors[k] > 1 and math.prod(factors) // factors[k] * (factors[k] - 1) >= vocab_size:
        factors[k] -= 1
        lowered = True
  return tuple(sorted(factors, reverse=True))


def auto_dim_factors(dim: int, cores: int) -> tuple[int, ...]:
  """`cores` factors of D, ascending: D's prime factors dealt to the smallest product."""
  primes, rest, p = [], dim, 2
  while rest > 1:
    while rest % p == 0:
      primes.append(p)
      rest //= p
    p += 1
  factors = [1] * cores
  for prime in sorted(primes, reverse=True):
    factors[factors.index(min(factors))] *= prime
  return tuple(sorted(factors))


def plan(vocab_factors: tuple[int, ...], dim_factors: tuple[int, ...], rank: int
         ) -> tuple[tuple[int, ...], int, str, int] | None:
  """(bonds, cut, order, tied-head FLOPs per token) of the cheapest head that never builds
  the table, or None when every cut leaves a block as large as the table."""
  sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
  cuts = range(1, len(sizes))
  bonds = tuple(min(rank, math.prod(sizes[:k]), math.prod(sizes[k:])) for k in cuts)
  padded, dim = math.prod(vocab_factors), math.prod(dim_factors)
  best = None
  for k, bond in zip(cuts, bonds, strict=True):
    if bond >= min(math.prod(sizes[:k]), math.prod(sizes[k:])):
      continue  # a block would hold as many values as the table
    vocab_left, dim_left = math.prod(vocab_factors[:k]), math.prod(dim_factors[:k])
    vocab_right, dim_right = padded // vocab_left, dim // dim_left
    for order, flops in ((RIGHT_FIRST, 2 * bond * (dim * vocab_right + padded * dim_left)),
                         (LEFT_FIRST, 2 * bond * (dim * vocab_left + padded * dim_right))):
      if best is None or flops < best[3]:
        best = (bonds, k, order, flops)
  return best


@base.register('tt', order=40, module=TTEmbedding, rank_label='TT-rank', fields={
    'tt_vocab_factors': (),  # v_1..v_n with product >= V; () = automatic
    'tt_dim_factors': (),  # d_1..d_n with product D; () = automatic
})
class TTConfig(base.KindConfig):
  """tt: TT-rank R = model.embed.rank >= 1 (below the largest cut size); factors from
  model.embed.tt_vocab_factors and tt_dim_factors (or automatic)."""

  rank: int
  vocab_factors: tuple[int, ...]
  dim_factors: tuple[int, ...]
  bonds: tuple[int, ...]
  cut: int
  head_order: str
  head_flops: int

  @classmethod
  def parse(cls, embed, **common) -> TTConfig:
    vocab, dim = common['vocab_size'], common['model_dim']
    vocab_factors = base.int_tuple(embed.tt_vocab_factors, 'tt_vocab_factors', 'e.g. (27, 26, 26)')
    dim_factors = base.int_tuple(embed.tt_dim_factors, 'tt_dim_factors', 'e.g. (4, 4, 8)')
    cores = len(vocab_factors or dim_factors) or AUTO_CORES
    vocab_factors = vocab_factors or auto_vocab_factors(vocab, cores)
    dim_factors = dim_factors or auto_dim_factors(dim, cores)
    if len(vocab_factors) != len(dim_factors) or len(vocab_factors) < 2:
      raise ValueError(f'model.embed.tt_vocab_factors={vocab_factors} and tt_dim_factors='
                       f'{dim_factors} must have the same length (the number of cores, >= 2).')
    if min(vocab_factors) < 1 or math.prod(vocab_factors) < vocab:
      raise ValueError(f'model.embed.tt_vocab_factors={vocab_factors} must be positive and '
                       f'multiply to at least vocab_size={vocab} (they give '
                       f'{math.prod(vocab_factors)}).')
    if min(dim_factors) < 1 or math.prod(dim_factors) != dim:
      raise ValueError(f'model.embed.tt_dim_factors={dim_factors} must be positive and '
                       f'multiply to model.model_dim={dim} (they give {math.prod(dim_factors)}).')
    rank = embed.rank
    if not base.is_int(rank) or rank < 1:
      raise ValueError(f'model.embed.rank={rank!r} is out of range for kind={cls.name!r}: it '
                       'must be an integer >= 1.')
    chosen = plan(vocab_factors, dim_factors, int(rank))
    if chosen is None:
      sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
      largest = max(min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes)))
      raise ValueError(f'model.embed.rank={rank} is out of range for kind={cls.name!r} with '
                       f'tt_vocab_factors={vocab_factors}, tt_dim_factors={dim_factors}: every '
                       'cut of the cores would leave a block as large as the table; it must be '
                       f'< {largest}.')
    bonds, cut, order, flops = chosen
    return cls(rank=int(rank), vocab_factors=vocab_factors, dim_factors=dim_factors,
               bonds=bonds, cut=cut, head_order=order, head_flops=flops, **common)

  def param_counts(self) -> dict[str, int]:
    ranks = (1, *self.bonds, 1)
    return {'embedding': sum(ranks[k] * v * d * ranks[k + 1] for k, (v, d) in enumerate(
        zip(self.vocab_factors, self.dim_factors, strict=True))), 'tied_head': 0}

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 2 * self.model_dim * self.bonds[self.cut - 1],
            'tied_head': self.head_flops}

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> TTEmbedding:
    if dense_table is not None:
      raise ValueError("dense_table initialisation needs model.embed.kind='svd' (or 'dense', "
                       "'adaptive'), not 'tt'.")
    return TTEmbedding(self.vocab_size, self.vocab_factors, self.dim_factors, self.bonds,
                       self.cut, self.head_order, dtype=self.dtype, rngs=rngs)
