r"""dpq: differentiable product quantization (DPQ-SX, Chen, Li & Sun 2020), K = model.embed.rank.

Shapes: G groups (`model.embed.dpq_groups`, dividing D), S = D / G the width of a group,
K codewords per group (`model.embed.rank`, >= 2), N tokens (B L, or V for the whole table).

Trained (the training-time table):   Q: VxD, the query of each token, G blocks of S columns;
                                     keys: KxD and values: KxD, group g's K codewords being
                                     columns [g S, (g + 1) S) (its K x S codebooks).
  score_vgk = <Q_vg, keys_kg> / tau              tau = model.embed.dpq_temperature
  code_vg   = argmax_k score_vgk                 an integer in [0, K)
  x_v       = concat_g values[code_vg, g]        the lookup: Q's rows for the ids only
  logits    = x W^T, W_v = x_v for every v       the tied head: the VxD table W made of
                                                 codebook rows (what DPQ's head computes)
Keys and values are separate codebooks (the paper's DPQ-SX with its own value matrix):
sharing them would tie the codeword a token takes to the vector it gets.

Straight-through estimator (`straight_through`): the forward pass computes with the one-hot
of the code, onehot(code_vg) (x = onehot . values, exactly the gathered codeword); the
backward pass takes the gradient of softmax(score_vg) in its place, so Q and the keys learn
through the values the softmax would mix.

What is stored after training: the codes (VxG integers of ceil(log2 K) bits each, packed:
`pack_codes`) and the value codebooks; Q and the keys are needed only to train, and are
read once to make the codes (`codes`). So `param_counts` counts the value codebooks (K D)
as the embedding's parameters (params.vocab), `training_params` the training-only ones
(V D + K D: Q and the keys, the training memory beyond them), and `code_bytes` the packed
codes, which factorized/model/costs.py adds to the table's bytes (summary.json `bytes`);
`table_shapes` is the value codebooks, the one float matrix stored (quantized with
`model.embed.quant_bits`).

Init (sigma^2 = 1/D): values ~ N(0, sigma^2), so the lookup has per-coordinate variance
sigma^2 and the tied logits variance D sigma^2 = 1; Q ~ N(0, 1/S) and keys ~ N(0, 1), so the
scores have unit variance (at tau = 1 the softmax is neither flat nor saturated).

Parameters stored: K D (the codebooks; the codes are integers); training-only: V D + K D.
FLOPs per token: lookup 2 K D (scores) + 2 K D (one-hot times values) = 4 K D; tied head
2 D V (x W^T; making W, 4 V K D per call, is not per token: `table_flops`). Decay: the
values alone (scaling them scales W by (1 - lr wd) and leaves the codes); Q and the keys
follow train/optim.py's general rule. Spectrum factors: [W] (VxD).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import base


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def straight_through(scores_NxGxK: jax.Array, temperature: float) -> jax.Array:
  """onehot(argmax_k scores) forward; backward, the gradient of softmax(scores / tau)."""
  return jax.nn.one_hot(jnp.argmax(scores_NxGxK, -1), scores_NxGxK.shape[-1],
                        dtype=scores_NxGxK.dtype)


def _straight_through_fwd(scores_NxGxK: jax.Array, temperature: float):
  return straight_through(scores_NxGxK, temperature), scores_NxGxK


def _straight_through_bwd(temperature: float, scores_NxGxK: jax.Array, g_NxGxK: jax.Array):
  _, vjp = jax.vjp(lambda s: jax.nn.softmax(s / temperature, axis=-1), scores_NxGxK)
  return vjp(g_NxGxK)


straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def code_bits(codewords: int) -> int:
  """Bits of one code, ceil(log2 K)."""
  return max(1, math.ceil(math.log2(codewords)))


def pack_codes(codes_VxG: jax.typing.ArrayLike, codewords: int) -> np.ndarray:
  """The codes as stored: ceil(log2 K) bits each, little-endian, packed into
  ceil(V G bits / 8) uint8 bytes."""
  bits = code_bits(codewords)
  flat = np.asarray(codes_VxG, np.uint32).reshape(-1)
  bits_NxB = (flat[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
  return np.packbits(bits_NxB.astype(np.uint8).reshape(-1), bitorder='little')


def unpack_codes(packed: np.ndarray, codewords: int, shape: tuple[int, int]) -> np.ndarray:
  """The int32 codes of `pack_codes`' bytes."""
  bits, count = code_bits(codewords), math.prod(shape)
  bits_NxB = np.unpackbits(packed, bitorder='little')[:count * bits].reshape(count, bits)
  return (bits_NxB.astype(np.int32) << np.arange(bits)).sum(-1).astype(np.int32).reshape(shape)


class DPQEmbedding(nnx.Module):
  """Codes argmax_k <Q_vg, keys_kg> / tau; x = concat_g values[code_vg, g]; logits = x W^T."""

  TABLE_PARAMS = ('values_KxD',)  # what is stored (with the codes); Q and keys train only
  TABLE_DECAY = ('values_KxD',)  # W shrinks by (1 - lr wd); the codes do not change
  TRAINING_ONLY = ('query_VxD', 'keys_KxD')  # read once to make the codes, then dropped

  def __init__(self, vocab_size: int, model_dim: int, codewords: int, *, groups: int,
               temperature: float, dtype: str, rngs: nnx.Rngs):
    self.dtype = base.compute_dtype(dtype)
    self.groups, self.temperature = groups, float(temperature)
    width = model_dim // groups
    self.query_VxD = nnx.Param(base.normal(rngs, (vocab_size, model_dim), 1.0 / width))
    self.keys_KxD = nnx.Param(base.normal(rngs, (codewords, model_dim), 1.0))
    self.values_KxD = nnx.Param(base.normal(rngs, (codewords, model_dim), 1.0 / model_dim))

  def _grouped(self, a_NxD: jax.Array) -> jax.Array:
    return a_NxD.reshape(*a_NxD.shape[:-1], self.groups, -1)

  def _scores(self, q_NxD: jax.Array) -> jax.Array:
    """score_NxGxK = <q_g, keys_kg> / tau, float32 (the codes never depend on the dtype)."""
    return jnp.einsum('...gs,kgs->...gk', self._grouped(q_NxD),
                      self._grouped(self.keys_KxD[...])) / self.temperature

  def _embed(self, q_NxD: jax.Array) -> jax.Array:
    """concat_g values[code_g, g] of queries q (the straight-through one-hot times values)."""
    onehot_NxGxK = straight_through(self._scores(q_NxD), self.temperature).astype(self.dtype)
    x_NxGxS = jnp.einsum('...gk,kgs->...gs', onehot_NxGxK,
                         self._grouped(self.values_KxD[...]).astype(self.dtype))
    return x_NxGxS.reshape(*q_NxD.shape[:-1], -1)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    """Looks up x_BxLxD = concat_g values[code_g(ids), g] in the compute dtype."""
    return self._embed(self.query_VxD[...][ids_BxL])

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """Tied logits_BxLxV = x W^T, W (VxD) every token's codewords, float32."""
    return base.project_to_vocab(x_BxLxD.astype(self.dtype), self._embed(self.query_VxD[...]))

  def codes(self) -> jax.Array:
    """code_VxG = argmax_k <Q_vg, keys_kg>, int32 in [0, K): what is stored for Q."""
    return jnp.argmax(self._scores(self.query_VxD[...]), -1).astype(jnp.int32)

  def stored_table(self, codes_VxG: jax.Array | None = None) -> jax.Array:
    """W_VxD from what is stored: the value codebooks gathered by the codes, float32."""
    codes_VxG = self.codes() if codes_VxG is None else codes_VxG
    values_KxGxS = self._grouped(self.values_KxD[...])
    return values_KxGxS[codes_VxG, jnp.arange(self.groups)].reshape(codes_VxG.shape[0], -1)

  def penalty(self) -> jax.Array:
    """No regulariser: 0."""
    return jnp.zeros((), jnp.float32)

  def factors(self) -> list[jax.Array]:
    """[W] (VxD): codebook rows, of rank up to min(V, D)."""
    return [self.stored_table()]


@base.register('dpq', order=50, module=DPQEmbedding, rank_label='K',
               fields={'dpq_groups': 8,  # G, dividing model_dim
                       'dpq_temperature': 1.0})  # tau of the backward pass's softmax
class DPQConfig(base.KindConfig):
  """dpq: K = model.embed.rank codewords per group in [2, V]; model.embed.dpq_groups G
  dividing model_dim; model.embed.dpq_temperature tau > 0."""

  storage = 'codes'
  size_fields = ('dpq_groups',)

  rank: int
  groups: int = 8
  temperature: float = 1.0

  @classmethod
  def parse(cls, embed, **common) -> DPQConfig:
    vocab, dim = common['vocab_size'], common['model_dim']
    if not base.is_int(embed.rank) or not 2 <= embed.rank <= vocab:
      raise ValueError(f'model.embed.rank={embed.rank!r} is out of range for kind=\'dpq\': it '
                       f'is K, the codewords per group, an integer in [2, vocab_size={vocab}].')
    groups = embed.dpq_groups
    if not base.is_int(groups) or groups < 1 or dim % groups:
      divisors = [d for d in range(1, dim + 1) if dim % d == 0]
      raise ValueError(f'model.embed.dpq_groups={groups!r} must divide model.model_dim={dim}: '
                       f'use one of {divisors}.')
    temperature = embed.dpq_temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
        or not temperature > 0:
      raise ValueError(f'model.embed.dpq_temperature={temperature!r} must be a number > 0.')
    return cls(rank=int(embed.rank), groups=int(groups), temperature=float(temperature),
               **common)

  def param_counts(self) -> dict[str, int]:
    return {'embedding': self.rank * self.model_dim, 'tied_head': 0}

  def training_params(self) -> int:
    return self.vocab_size * self.model_dim + self.rank * self.model_dim

  def code_bytes(self) -> int:
    return -(-self.vocab_size * self.groups * code_bits(self.rank) // 8)

  def flops_per_token(self) -> dict[str, int]:
    return {'embedding': 4 * self.rank * self.model_dim,
            'tied_head': 2 * self.model_dim * self.vocab_size}

  def table_flops(self) -> int:
    """FLOPs per call (not per token) of making the tied head's W: scores and one-hots of
    every token, 4 V K D."""
    return 4 * self.vocab_size * self.rank * self.model_dim

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    return {('values_KxD',): (self.rank, self.model_dim)}

  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> DPQEmbedding:
    if dense_table is not None:
      raise ValueError("dense_table initialisation needs model.embed.kind='svd' (or 'dense', "
                       f"'adaptive'), not '{self.name}'.")
    return DPQEmbedding(self.vocab_size, self.model_dim, self.rank, groups=self.groups,
                        temperature=self.temperature, dtype=self.dtype, rngs=rngs)
