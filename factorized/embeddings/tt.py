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
  lookup     x[id] = L[i_L] R[:, i_R] (D_L x r_c times r_c x D_R): 2 D r_c FLOPs per token,
             computed as a gather from the head's table slices below (per call; faster on
             CPUs than a batch of N small D_L x r_c x D_R products);
  tied head  the table in slices of S rows of L (S V_R rows of the table, at most
             SLICE_ELEMENTS values and half the table; where one row of L holds
             more, a row of L times a run of R's columns), each slice L[s] R made
             (2 S V_R D r_c FLOPs, per call) and multiplied into the hidden states as a dense
             table slice is (2 D V FLOPs per token, the padding ids' rows dropped before the
             product), under jax.checkpoint: the backward pass makes each slice again rather
             than keep it, so no more than one slice of the table is ever held. The loss
             takes the slices' logits as they are (`attend_parts`), without concatenating.
The cut is the one of smallest bond r_c (then of fewest block values) whose blocks stay
below the table. A per-token contraction through the blocks (x through R, then L) never
makes a table slice, but costs 2 r_c (D V_R + V' D_L) FLOPs per token (4.5x dense's head at
Brown's R=64) and holds an N x D_L x r_c x V_R intermediate: several times slower than these
slices (benchmarks/README.md).

Auto factors (tt_vocab_factors=(), tt_dim_factors=()): 3 cores; V' from ceil(V^(1/3))
factors lowered one at a time while the product stays >= V (17,906 -> 27 x 26 x 26 =
18,252); D's prime factors dealt to the factor of smallest product (128 -> 4 x 4 x 8); v
descending and d ascending along the train. Given one list, the other gets its length.

Init (sigma^2 = 1/D): Gaussian cores scaled alike so that the padded table's Frobenius norm
(computed core by core with r x r transfer matrices, not from the table) is exactly
sqrt(V' D sigma^2): mean-square entry sigma^2, so Var(x) = sigma^2 and, the entries of a
row being uncorrelated, Var(logit) = D sigma^2.

Parameters sum_k r_{k-1} v_k d_k r_k; the tied head adds none. FLOPs per token as above
(the block merges and table slices are per call, not per token: not counted; `table_flops`).
Decay: the first core (the table is linear in each core: decaying one shrinks it by
(1 - lr wd)). Spectrum factors: [W] (V x D, from the blocks, outside the loss): a TT
matrix is in general of full rank, so no thinner factors exist.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base

AUTO_CORES = 3
SLICE_ELEMENTS = 2 ** 21  # the most table values of one slice of the tied head (8 MiB float32)


def _merge(cores: list[jax.Array]) -> jax.Array:
  """Cores a x v x d x b merged into one a x (v...) x (d...) x b block."""
  block = cores[0]
  for core in cores[1:]:
    a, v, d, _ = block.shape
    _, w, e, c = core.shape
    block = jnp.einsum('avdb,bwec->avwdec', block, core).reshape(a, v * w, d * e, c)
  return block


class TTEmbedding(nnx.Module):
  """A TT-matrix table: lookups through two merged blocks of cores, the tied head through
  slices of the table made from them."""

  TABLE_PARAMS = ('G_RxVkxDkxR',)
  TABLE_DECAY = (('G_RxVkxDkxR', 0),)  # the table is linear in each core: decay the first

  def __init__(self, vocab_size: int, vocab_factors: tuple[int, ...],
               dim_factors: tuple[int, ...], bonds: tuple[int, ...], cut: int, *,
               dtype: str, rngs: nnx.Rngs, slice_elements: int = SLICE_ELEMENTS):
    self.dtype = base.compute_dtype(dtype)
    self.vocab_size, self.cut = vocab_size, cut
    self.slice_elements = slice_elements
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
    """Looks up x_BxLxD, each id's row from the table slice that holds it (`_table_slices`),
    in the compute dtype. A gather's gradient needs its indices, not the slice, so the
    backward pass keeps the blocks, never a slice."""

    def rows(table_SxD, first):
      local_BxL = ids_BxL - first
      held_BxL = (local_BxL >= 0) & (local_BxL < table_SxD.shape[0])
      rows_BxLxD = table_SxD[jnp.clip(local_BxL, 0, table_SxD.shape[0] - 1)]
      return jnp.where(held_BxL[..., None], rows_BxLxD, jnp.zeros((), table_SxD.dtype))

    parts = [rows(make_table(), first) for first, make_table in self._table_slices()]
    return functools.reduce(jnp.add, parts)

  def slices(self, vocab_left: int, vocab_right: int) -> list[tuple[int, int, int, int]]:
    """The tied head's slices of the table, in id order, as (L rows start, count, R columns
    start, count): whole rows of L while one holds at most the slice limit (min of
    `slice_elements` and half the table, at least one table row), else one row of
    L with a run of R's columns; slices of padding ids only are left out."""
    limit = max(self.model_dim, min(self.slice_elements, self.vocab_size * self.model_dim // 2))
    rows_of_l = limit // (vocab_right * self.model_dim)
    if rows_of_l:
      spans = [(start, min(rows_of_l, vocab_left - start), 0, vocab_right)
               for start in range(0, vocab_left, rows_of_l)]
    else:
      columns = limit // self.model_dim
      spans = [(row, 1, start, min(columns, vocab_right - start))
               for row in range(vocab_left) for start in range(0, vocab_right, columns)]
    return [span for span in spans if span[0] * vocab_right + span[2] < self.vocab_size]

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = x W^T, float32 (`attend_parts` concatenated)."""
    parts = self.attend_parts(x_BxLxD)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

  def _table_slices(self):
    """[(first id, () -> its table slice S x D in the compute dtype)] in id order (`slices`;
    the padding rows dropped)."""
    left_VLxDLxR, right_RxVRxDR = self.blocks()
    vocab_left, vocab_right = left_VLxDLxR.shape[0], right_RxVRxDR.shape[1]
    made = []
    for left_start, left_rows, right_start, right_columns in self.slices(vocab_left,
                                                                          vocab_right):
      first = left_start * vocab_right + right_start
      kept = min(left_rows * right_columns, self.vocab_size - first)
      left_SLxDLxR = left_VLxDLxR[left_start:left_start + left_rows]
      right_RxSRxDR = right_RxVRxDR[:, right_start:right_start + right_columns]

      def make_table(left_SLxDLxR=left_SLxDLxR, right_RxSRxDR=right_RxSRxDR, kept=kept):
        table_SxD = jnp.einsum('tda,aue->tude', left_SLxDLxR, right_RxSRxDR)
        return table_SxD.reshape(-1, self.model_dim)[:kept]

      made.append((first, make_table))
    return made

  def attend_parts(self, x_BxLxD: jax.Array) -> list[jax.Array]:
    """Tied logits x W^T slice by slice of W (id order), float32, W never made whole: each
    slice under jax.checkpoint, made again in the backward pass rather than kept."""
    x_BxLxD = x_BxLxD.astype(self.dtype)
    return [jax.checkpoint(lambda x, make_table=make_table: base.project_to_vocab(
        x, make_table()))(x_BxLxD) for _, make_table in self._table_slices()]

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
         ) -> tuple[tuple[int, ...], int] | None:
  """(bonds, cut): the cut of smallest bond (then of fewest block values) whose blocks stay
  below the table, or None when every cut leaves a block as large as the table."""
  sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
  cuts = range(1, len(sizes))
  bonds = tuple(min(rank, math.prod(sizes[:k]), math.prod(sizes[k:])) for k in cuts)
  best = None
  for k, bond in zip(cuts, bonds, strict=True):
    left, right = math.prod(sizes[:k]), math.prod(sizes[k:])
    if bond >= min(left, right):
      continue  # a block would hold as many values as the table
    key = (bond, bond * (left + right))
    if best is None or key < best[0]:
      best = (key, k)
  return None if best is None else (bonds, best[1])


@base.register('tt', order=40, module=TTEmbedding, rank_label='TT-rank', fields={
    'tt_vocab_factors': (),  # v_1..v_n with product >= V; () = automatic
    'tt_dim_factors': (),  # d_1..d_n with product D; () = automatic
})
class TTConfig(base.KindConfig):
  """tt: TT-rank R = model.embed.rank >= 1 (below the largest cut size); factors from
  model.embed.tt_vocab_factors and tt_dim_factors (or automatic)."""

  size_fields = ('tt_vocab_factors', 'tt_dim_factors')

  rank: int
  vocab_factors: tuple[int, ...]
  dim_factors: tuple[int, ...]
  bonds: tuple[int, ...]
  cut: int

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
    bonds, cut = chosen
    return cls(rank=int(rank), vocab_factors=vocab_factors, dim_factors=dim_factors,
               bonds=bonds, cut=cut, **common)

  def param_counts(self) -> dict[str, int]:
    ranks = (1, *self.bonds, 1)
    return {'embedding': sum(ranks[k] * v * d * ranks[k + 1] for k, (v, d) in enumerate(
        zip(self.vocab_factors, self.dim_factors, strict=True))), 'tied_head': 0}

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 2 * self.model_dim * self.bonds[self.cut - 1],
            'tied_head': 2 * self.model_dim * self.vocab_size}

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    ranks = (1, *self.bonds, 1)
    return {('G_RxVkxDkxR', k): (ranks[k], v, d, ranks[k + 1]) for k, (v, d) in enumerate(
        zip(self.vocab_factors, self.dim_factors, strict=True))}

  def table_flops(self) -> int:
    """FLOPs per call (not per token) of making the tied head's table slices from the
    blocks, 2 V' D r_c (the block merges, smaller, not counted)."""
    return 2 * math.prod(self.vocab_factors) * self.model_dim * self.bonds[self.cut - 1]

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> TTEmbedding:
    if dense_table is not None:
      raise ValueError("dense_table initialisation needs model.embed.kind='svd' (or 'dense', "
                       "'adaptive'), not 'tt'.")
    return TTEmbedding(self.vocab_size, self.vocab_factors, self.dim_factors, self.bonds,
                       self.cut, dtype=self.dtype, rngs=rngs)
