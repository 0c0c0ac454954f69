r"""adaptive: frequency-banded widths (adaptive input representations, Baevski & Auli 2019;
the input side of Grave et al. 2017's adaptive softmax).

Shapes: V_b the ids of band b, W_b its width, D model width.

Token ids are ordered by train-split frequency (factorized/frequency.py, of the run's
train_counts.npy: word and BPE ids are not in that order) and cut into bands at
`band_cutoffs`, frequency ranks c_1 < c_2 < ...: band 0 holds the c_1 most frequent ids,
band 1 the next c_2 - c_1, and so on. Band b has a table of width
W_b = max(1, floor(R / band_factor^b)) (R = model.embed.rank; or explicit `band_widths`)
and its own projection to D:

  A_b: V_b x W_b, P_b: W_b x D     x = A_b[i] P_b for the id at position i of band b
  tied head: band b's logits (x P_b^T) A_b^T, the bands concatenated (frequency order)
             and put back in id order: the full softmax. The loss takes them band by band
             with the targets' positions in the frequency order (`attend_parts`,
             `ordered_ids`): the same NLL without gathering the BxLxV logits.

Init (sigma^2 = 1/D), albert's per band: A_b ~ N(0, D sigma^2 / W_b), P_b with random
orthonormal rows (W_b <= D): Var(x) = W_b (D sigma^2 / W_b) / D = sigma^2 and
Var(logit) = W_b Var(A_b) = D sigma^2, in expectation over the init: a band W_b wide gives
each token's logits in it the scale of x along W_b random directions, so for bands 1-4 wide
one init's realized scale varies by tens of percent. From a dense table (`dense_table=`,
banded post-hoc compression): per band the rank-W_b truncated SVD of its rows,
A_b = Q_U diag(S), P_b = Q_V.

Parameters sum_b (V_b W_b + W_b D) (no projection bias, as in Baevski & Auli); the tied
head adds none. FLOPs per token: the lookup projects every token through every band (a
static-shape batch; the token's own band is kept), 2 D sum_b W_b; the tied head
sum_b (2 D W_b + 2 W_b V_b). Decay: the A_b, so every band's rows A_b P_b shrink by
(1 - lr wd) as a dense W does (the P_b are not decayed). Spectrum factors: [F, P], F: V x
sum_b W_b holding row A_b[i] in band b's columns, P: the P_b stacked.

Default cutoffs (band_cutoffs=()): Baevski & Auli's WikiText-103 cutoffs (20,000 and 60,000
of its 267,735 words) scaled to V: round(0.0747 V) and round(0.2241 V) (1,338 and 4,013 for
Brown's 17,906 ids), dropping any that would leave a band empty.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized import frequency
from factorized.embeddings import base

# Baevski & Auli's WikiText-103 cutoffs as fractions of its vocabulary.
DEFAULT_CUTOFF_FRACTIONS = (20_000 / 267_735, 60_000 / 267_735)


class FrequencyOrder(nnx.Variable):
  """Each token id's position in the train-split frequency order: data, not a parameter
  (never trained or checkpointed; `build` recomputes it from the run's train counts)."""


class AdaptiveEmbedding(nnx.Module):
  """Bands of ids by frequency, band b a V_b x W_b table projected to D by P_b."""

  TABLE_PARAMS = ('A_VbxWb', 'P_WbxD')
  TABLE_DECAY = ('A_VbxWb',)  # each band's A_b P_b shrinks by (1 - lr wd), as a dense W does

  def __init__(self, band_sizes: tuple[int, ...], widths: tuple[int, ...], model_dim: int,
               order_V: np.ndarray, *, dtype: str, rngs: nnx.Rngs,
               dense_table: jax.typing.ArrayLike | None = None):
    vocab_size = sum(band_sizes)
    self.dtype = base.compute_dtype(dtype)
    self.starts = tuple(int(s) for s in np.cumsum((0, *band_sizes[:-1])))
    self.sizes = tuple(band_sizes)
    position_V = np.empty(vocab_size, np.int32)
    position_V[order_V] = np.arange(vocab_size, dtype=np.int32)
    self.position_V = FrequencyOrder(jnp.asarray(position_V))
    table = (None if dense_table is None
             else base.checked_table(dense_table, vocab_size, model_dim))
    tables, projections = [], []
    for start, size, width in zip(self.starts, self.sizes, widths, strict=True):
      if table is None:
        a_VbxWb = base.normal(rngs, (size, width), 1.0 / width)  # D sigma^2 / W_b
        p_WbxD = base.orthonormal_rows(rngs, width, model_dim)
      else:
        svd = base.truncated_svd(table[order_V[start:start + size]], width)
        a_VbxWb, p_WbxD = svd['U'] * svd['s'], svd['V']
      tables.append(nnx.Param(jnp.asarray(a_VbxWb, jnp.float32)))
      projections.append(nnx.Param(jnp.asarray(p_WbxD, jnp.float32)))
    self.A_VbxWb = nnx.List(tables)
    self.P_WbxD = nnx.List(projections)

  def _bands(self):
    return zip(self.starts, self.sizes, self.A_VbxWb, self.P_WbxD, strict=True)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = A_b[i] P_b (band b, position i in it) in the compute dtype."""
    position_BxL = self.position_V[...][ids_BxL]
    x_BxLxD = None
    for start, size, table, projection in self._bands():
      in_band_BxL = (position_BxL >= start) & (position_BxL < start + size)
      rows_BxL = jnp.clip(position_BxL - start, 0, size - 1)
      a_BxLxW = jnp.where(in_band_BxL[..., None], table[...][rows_BxL], 0.0).astype(self.dtype)
      part_BxLxD = a_BxLxW @ projection[...].astype(self.dtype)
      x_BxLxD = part_BxLxD if x_BxLxD is None else x_BxLxD + part_BxLxD
    return x_BxLxD

  def attend_parts(self, x_BxLxD: jax.Array) -> list[jax.Array]:
    """Tied logits band by band (frequency order): band b's (x P_b^T) A_b^T, float32."""
    x_BxLxD = x_BxLxD.astype(self.dtype)
    return [base.project_to_vocab(
        jnp.einsum('...d,wd->...w', x_BxLxD, projection[...].astype(self.dtype)), table[...])
            for _, _, table, projection in self._bands()]

  def ordered_ids(self, ids: jax.Array) -> jax.Array:
    """Each id's position in the frequency order of `attend_parts`."""
    return self.position_V[...][ids]

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV in id order, float32."""
    return jnp.concatenate(self.attend_parts(x_BxLxD), axis=-1)[..., self.position_V[...]]

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[F, P]: F (V x sum W_b) holds A_b's row of each id in band b's columns, P (sum W_b x D)
    the P_b stacked, so that F P is the table."""
    widths = [table.shape[1] for table in self.A_VbxWb]
    offsets = np.cumsum([0, *widths])
    rows = [jnp.pad(table[...], ((0, 0), (int(left), int(offsets[-1] - left - width))))
            for table, left, width in zip(self.A_VbxWb, offsets, widths, strict=False)]
    f_VxK = jnp.concatenate(rows, axis=0)[self.position_V[...]]
    return [f_VxK, jnp.concatenate([projection[...] for projection in self.P_WbxD], axis=0)]


def default_cutoffs(vocab_size: int) -> tuple[int, ...]:
  """Baevski & Auli's WikiText-103 cutoffs scaled to V (none that leaves a band empty)."""
  cutoffs = [round(fraction * vocab_size) for fraction in DEFAULT_CUTOFF_FRACTIONS]
  return tuple(sorted({c for c in cutoffs if 1 <= c < vocab_size}))


@base.register('adaptive', order=30, module=AdaptiveEmbedding, rank_label='W_0', fields={
    'band_cutoffs': (),  # frequency ranks where bands end; () = Baevski & Auli's, scaled
    'band_factor': 4.0,  # band b has width rank / band_factor^b (at least 1)
    'band_widths': (),  # explicit widths, one per band, overriding rank and band_factor
})
class AdaptiveConfig(base.KindConfig):
  """adaptive: the first band's width R = model.embed.rank in [1, D]; bands at
  model.embed.band_cutoffs; widths R / band_factor^b (or model.embed.band_widths)."""

  size_fields = ('band_cutoffs', 'band_factor', 'band_widths')

  rank: int
  band_sizes: tuple[int, ...]
  widths: tuple[int, ...]

  @classmethod
  def parse(cls, embed, **common) -> AdaptiveConfig:
    vocab, dim = common['vocab_size'], common['model_dim']
    rank = base.check_rank(embed.rank, cls.name, dim, 'model_dim')
    cutoffs = base.int_tuple(embed.band_cutoffs, 'band_cutoffs', 'e.g. (1000, 4000)')
    cutoffs = cutoffs or default_cutoffs(vocab)
    if any(b <= a for a, b in itertools.pairwise((0, *cutoffs, vocab))):
      raise ValueError(f'model.embed.band_cutoffs={tuple(cutoffs)} must be increasing '
                       f'frequency ranks in [1, vocab_size - 1]=[1, {vocab - 1}].')
    factor = embed.band_factor
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
      raise ValueError(f'model.embed.band_factor={factor!r} must be a number >= 1.')
    widths = base.int_tuple(embed.band_widths, 'band_widths', 'one width per band')
    if widths and (len(widths) != len(cutoffs) + 1 or not all(1 <= w <= dim for w in widths)):
      raise ValueError(f'model.embed.band_widths={widths} must give {len(cutoffs) + 1} widths '
                       f'(one per band of band_cutoffs={cutoffs}) in [1, model_dim={dim}].')
    widths = widths or tuple(max(1, int(rank // factor ** band))
                             for band in range(len(cutoffs) + 1))
    sizes = tuple(b - a for a, b in itertools.pairwise((0, *cutoffs, vocab)))
    return cls(rank=rank, band_sizes=sizes, widths=widths, **common)

  def param_counts(self) -> dict[str, int]:
    return {'embedding': sum(size * width + width * self.model_dim
                             for size, width in zip(self.band_sizes, self.widths, strict=True)),
            'tied_head': 0}

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 2 * self.model_dim * sum(self.widths),
            'tied_head': sum(2 * self.model_dim * width + 2 * width * size
                             for size, width in zip(self.band_sizes, self.widths, strict=True))}

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    bands = list(enumerate(zip(self.band_sizes, self.widths, strict=True)))
    return {**{('A_VbxWb', b): (size, width) for b, (size, width) in bands},
            **{('P_WbxD', b): (width, self.model_dim) for b, (_, width) in bands}}

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> AdaptiveEmbedding:
    if token_counts is None or len(token_counts) != self.vocab_size:
      raise ValueError(f"kind='adaptive' needs the train split's count of each of the "
                       f'{self.vocab_size} token ids (token_counts=: data.load_train_counts '
                       'of the run) for its frequency order.')
    return AdaptiveEmbedding(self.band_sizes, self.widths, self.model_dim,
                             frequency.frequency_order(token_counts), dtype=self.dtype,
                             rngs=rngs, dense_table=dense_table)
