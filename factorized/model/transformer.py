"""A small decoder-only Transformer LM around any embedding kind of factorized/embeddings/.

Shapes: B batch, L length, D model width, V vocabulary, H heads, K head width
(D / H), M MLP width.

Pre-LayerNorm blocks (causal multi-head attention through
`jax.nn.dot_product_attention(..., is_causal=True)` with a fused QKV projection,
then a GELU MLP), residual dropout after the embeddings and after each attention
and MLP branch (no dropout on attention probabilities: the fused attention call
has none), a final LayerNorm and the tied head `embed.attend` or an untied DxV
matrix. Choices, and why:
  - token embeddings are multiplied by 0.02 sqrt(D): tables have per-coordinate
    std 1/sqrt(D) (tied logits of unit variance; factors that Adam moves at
    comparable rates, see factorized/embeddings/) while the residual stream starts at
    std 0.02 (GPT-2, BERT). A large input (Vaswani's sqrt(D)) would dominate the
    final hidden state at init, align it with the table's row space, and so
    inflate tied logits by about sqrt(D/R) at rank R, and make the current
    token the likeliest next one;
  - RoPE (rotate-half form, base 10000) uses cos/sin tables computed once per
    (L, K) in numpy: XLA constants, not parameters, so the optimizer never sees them;
    learned positions are an LxD parameter ~ N(0, 0.02^2) (GPT-2);
  - GELU is the tanh approximation (cheaper on CPU; ALBERT's `gelu_new` too);
  - kernels are LeCun-normal, the two residual output projections scaled by
    1/sqrt(2 num_layers) (GPT-2), biases zero;
  - parameters are float32 and cast to `model.dtype` at use; logits are float32;
  - the head is a module with `attend(x) -> logits` (`head_module()`: the embedding when
    tied, UntiedHead otherwise), so that factorized/model/loss.py can run it over chunks of rows;
    `model.remat` recomputes each block in the backward pass (`recomputed_block`);
  - random streams: the embedding (with any head parameters it owns) and the untied
    head each draw from a stream of their own, split off the model's `params` stream
    before anything else is drawn, so at one seed every other parameter (blocks,
    positions, final norm) is bitwise the same whatever the kind, rank or head;
  - the config stops at `ModelArgs.from_config` (called once per run, by
    factorized/config/build.py), which validates every field (the embedding kind's own
    through `embeddings.embed_config`) before anything is built; modules take plain numbers;
  - quantization-aware training (`model.embed.quant_bits` > 0): the lookup and the head
    use the embedding's and the head's modules with their table matrices fake-quantized
    (`quantize.quantized_module`, factorized/embeddings/quantize.py: values w' = q s,
    straight-through gradients to the float32 parameters), whatever the kind; with
    quant_bits = 0 they are the modules themselves, and nothing changes;
  - dropout is keyed per example: the caller passes one key per example
    (`dropout_keys_B`, the trainer derives it from the step and the example's index in
    the global batch) and each dropout site folds in its own number. An example's
    masks therefore do not depend on which device or micro-batch it lands on, so a
    run gives the same result on 1 or 8 devices, with or without gradient
    accumulation. No keys: no dropout (evaluation). The module holds no RNG state.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized import embeddings
from factorized.embeddings import quantize
from factorized.spec import Spec

ROPE_BASE = 10000.0
# Per-coordinate std of the residual stream's input (GPT-2, BERT and ALBERT's 0.02).
INPUT_STD = 0.02
POSITIONS = ('rope', 'learned')


def _positive_int(value, field: str, fix: str) -> int:
  if not embeddings.base.is_int(value) or value <= 0:
    raise ValueError(f'{field}={value!r} must be a positive integer; {fix}.')
  return int(value)


@dataclasses.dataclass(frozen=True)
class ModelArgs:
  """What a TransformerLM is built from, validated: plain numbers and the embedding kind's
  config. `from_config` is where the ConfigDict stops."""

  embed: embeddings.KindConfig
  vocab_size: int
  model_dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float
  positions: str
  dtype: str
  max_len: int
  head_chunk_rows: int = 0  # rows per chunk of the loss's head (factorized/model/loss.py; 0: auto)
  head_chunk_vocab: int = 0  # vocabulary rows per slice of a table head (loss.py; 0: auto)
  remat: bool = False  # recompute each block's activations in the backward pass
  head: embeddings.KindConfig | None = None  # an untied head's own kind (None: tied or DxV)
  quant_bits: int = 0  # the tables' matrices fake-quantized to this many bits (0: float32)
  quant_group: int = 0  # columns per scale (0: one scale per row)

  @classmethod
  def from_config(cls, model_config: Spec, vocab_size: int,
                  max_len: int) -> ModelArgs:
    """Validates config.model (and max_len = data.seq_len); a ValueError names the field."""
    _positive_int(vocab_size, 'vocab_size', 'it comes from the prepared corpus')
    sizes = {field: _positive_int(model_config[field], f'model.{field}',
                                  'set it to an integer >= 1')
             for field in ('model_dim', 'num_layers', 'num_heads', 'mlp_dim')}
    embed = embeddings.embed_config(model_config, vocab_size)
    head = embeddings.head_config(model_config, vocab_size)
    if model_config.positions not in POSITIONS:
      raise ValueError(f'model.positions={model_config.positions!r} is unknown; '
                       f'allowed: {"|".join(POSITIONS)}.')
    if not 0.0 <= model_config.dropout < 1.0:
      raise ValueError(f'model.dropout={model_config.dropout!r} must lie in [0, 1).')
    dim, heads = sizes['model_dim'], sizes['num_heads']
    if dim % heads or (model_config.positions == 'rope' and (dim // heads) % 2):
      raise ValueError(f'model.num_heads={heads} must divide model.model_dim={dim} into '
                       'heads of even width (RoPE rotates pairs); pick another num_heads.')
    if not embeddings.base.is_int(max_len) or max_len <= 0:
      raise ValueError(f'data.seq_len={max_len!r} (max_len) must be a positive integer.')
    chunks = {field: model_config[field] for field in ('head_chunk_rows', 'head_chunk_vocab')}
    for field, value in chunks.items():
      if not embeddings.base.is_int(value) or value < 0:
        raise ValueError(f'model.{field}={value!r} must be an integer >= 0 '
                         '(0: automatic, see factorized/model/loss.py).')
    remat = model_config.remat
    if not isinstance(remat, bool):
      raise ValueError(f'model.remat={remat!r} must be True or False.')
    args = cls(embed=embed, vocab_size=int(vocab_size), **sizes,
               dropout=float(model_config.dropout), positions=model_config.positions,
               dtype=model_config.dtype, max_len=int(max_len),
               **{field: int(value) for field, value in chunks.items()}, remat=remat, head=head,
               quant_bits=quantize.check_bits(model_config.embed.quant_bits,
                                              'model.embed.quant_bits'),
               quant_group=quantize.check_group(model_config.embed.quant_group,
                                                'model.embed.quant_group'))
    if args.quant_bits:  # a group of columns must divide every table's columns
      quantize.check_group(args.quant_group, 'model.embed.quant_group', args.table_shapes())
    return args

  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    """{path: shape} of the model's vocabulary tables, paths from the model's Param state:
    the embedding's (its kind's `table_shapes`) and the head's (an untied head's kind's, or
    the untied DxV matrix, stored VxD)."""
    shapes = {('embed', *path): shape for path, shape in self.embed.table_shapes().items()}
    if self.head is not None:
      shapes.update({('head', *path): shape for path, shape in self.head.table_shapes().items()})
    elif not self.embed.tied:
      shapes[('head', 'W_VxD')] = (self.vocab_size, self.model_dim)
    return shapes


@functools.lru_cache(maxsize=32)
def rope_tables(length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """cos and sin tables, Lx1x(K/2) float32, for rotate-half RoPE."""
  inv_freq = ROPE_BASE ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  angles_LxK2 = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
  return (np.cos(angles_LxK2)[:, None].astype(np.float32),
          np.sin(angles_LxK2)[:, None].astype(np.float32))


def apply_rope(x_BxLxHxK: jax.Array) -> jax.Array:
  """Rotates each (i, i + K/2) pair of x by position-dependent angles."""
  _, length, _, head_dim = x_BxLxHxK.shape
  cos, sin = (jnp.asarray(t, x_BxLxHxK.dtype) for t in rope_tables(length, head_dim))
  x1, x2 = jnp.split(x_BxLxHxK, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class ExampleDropout(nnx.Module):
  """Inverted dropout whose mask for example b is drawn from fold_in(keys_B[b], site)."""

  def __init__(self, rate: float, site: int):
    self.rate = float(rate)
    self.site = site

  def __call__(self, x_BxLxD: jax.Array, keys_B: jax.Array | None) -> jax.Array:
    if keys_B is None or self.rate == 0.0:
      return x_BxLxD
    if keys_B.shape != x_BxLxD.shape[:1]:
      raise ValueError(f'dropout_keys_B has shape {keys_B.shape}; expected one key per '
                       f'example, shape {x_BxLxD.shape[:1]}.')
    keep_prob = 1.0 - self.rate
    keep_BxLxD = jax.vmap(lambda key: jax.random.bernoulli(
        jax.random.fold_in(key, self.site), keep_prob, x_BxLxD.shape[1:]))(keys_B)
    return jnp.where(keep_BxLxD, x_BxLxD / jnp.asarray(keep_prob, x_BxLxD.dtype),
                     jnp.zeros((), x_BxLxD.dtype))


class Block(nnx.Module):
  """x + attn(LN(x)), then x + mlp(LN(x)), with residual dropout."""

  def __init__(self, args: ModelArgs, layer: int, *, rngs: nnx.Rngs):
    dim, mlp_dim = args.model_dim, args.mlp_dim
    dtype = embeddings.compute_dtype(args.dtype)
    out_init = jax.nn.initializers.variance_scaling(
        1.0 / (2 * args.num_layers), 'fan_in', 'truncated_normal')
    self.num_heads = args.num_heads
    self.rope = args.positions == 'rope'
    self.attn_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.attn_out = nnx.Linear(dim, dim, dtype=dtype, kernel_init=out_init, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, dim, dtype=dtype, kernel_init=out_init, rngs=rngs)
    self.attn_dropout = ExampleDropout(args.dropout, site=2 * layer + 1)
    self.mlp_dropout = ExampleDropout(args.dropout, site=2 * layer + 2)

  def __call__(self, x_BxLxD: jax.Array, dropout_keys_B: jax.Array | None) -> jax.Array:
    """One pre-LN block; causal."""
    batch, length, dim = x_BxLxD.shape
    head_dim = dim // self.num_heads
    qkv_BxLx3xHxK = self.qkv(self.attn_norm(x_BxLxD)).reshape(
        batch, length, 3, self.num_heads, head_dim)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
    if self.rope:
      q_BxLxHxK, k_BxLxHxK = apply_rope(q_BxLxHxK), apply_rope(k_BxLxHxK)
    attn_BxLxHxK = jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True)
    attn_BxLxD = self.attn_out(attn_BxLxHxK.reshape(batch, length, dim))
    x_BxLxD = x_BxLxD + self.attn_dropout(attn_BxLxD, dropout_keys_B)
    h_BxLxM = jax.nn.gelu(self.mlp_in(self.mlp_norm(x_BxLxD)), approximate=True)
    mlp_BxLxD = self.mlp_out(h_BxLxM)
    return x_BxLxD + self.mlp_dropout(mlp_BxLxD, dropout_keys_B)


class UntiedHead(nnx.Module):
  """A separate DxV output matrix ~ N(0, 1/D), stored transposed (VxD: faster on CPU)."""

  TABLE_PARAMS = ('W_VxD',)  # its table (embeddings/quantize.py)
  LOGITS_TABLE = 'W_VxD'  # logits = project_to_vocab(x, W): model/loss.py slices its gradient

  def __init__(self, dim: int, vocab_size: int, dtype: jnp.dtype, *, rngs: nnx.Rngs):
    self.dtype = dtype
    self.W_VxD = nnx.Param(
        jax.random.normal(rngs.params(), (vocab_size, dim), jnp.float32) / math.sqrt(dim))

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    """logits_BxLxV = x W^T, float32."""
    return embeddings.project_to_vocab(x_BxLxD.astype(self.dtype), self.W_VxD[...])


def recomputed_block(block: Block, x_BxLxD: jax.Array,
                     dropout_keys_B: jax.Array | None) -> jax.Array:
  """block(x, keys), saving only x and recomputing the block in the backward pass.

  jax.checkpoint (nnx.remat) saves no memory on XLA:CPU (benchmarks/README.md): XLA
  expands the optimization barrier that keeps the recomputation apart from the forward
  pass, then merges the two as common subexpressions, so every block's activations stay
  live. Here the recomputation's input is x times a one computed from the block's output
  cotangent: a value XLA cannot merge with the forward pass's, and that does not exist
  before the later blocks' backward passes are done. The gradients are those of
  `block` (x * 1 is x, bitwise)."""
  graphdef, params = nnx.split(block)

  def apply(params, x_BxLxD, keys_B):
    return nnx.merge(graphdef, params)(x_BxLxD, keys_B)

  @jax.custom_vjp
  def run(params, x_BxLxD, keys_B):
    return apply(params, x_BxLxD, keys_B)

  def forward(params, x_BxLxD, keys_B):
    return apply(params, x_BxLxD, keys_B), (params, x_BxLxD, keys_B)

  def backward(saved, dy_BxLxD):
    params, x_BxLxD, keys_B = saved
    # x * 1, but a 1 that XLA cannot prove to be one: it depends on the cotangent.
    probe = dy_BxLxD[0, 0, 0]
    one = 1 + 0 * jnp.where(jnp.isfinite(probe), probe, 0)
    x_BxLxD = x_BxLxD * one.astype(x_BxLxD.dtype)
    _, pullback = jax.vjp(lambda params, x: apply(params, x, keys_B), params, x_BxLxD)
    return (*pullback(dy_BxLxD), None)

  run.defvjp(forward, backward)
  return run(params, x_BxLxD, dropout_keys_B)


class TransformerLM(nnx.Module):
  """Embedding -> pre-LN causal blocks -> final LN -> tied or untied head."""

  def __init__(self, args: ModelArgs, *, rngs: nnx.Rngs,
               dense_table: jax.typing.ArrayLike | None = None,
               token_counts: np.ndarray | None = None):
    """`args` from ModelArgs.from_config; `dense_table` and `token_counts` as the embedding
    kind's `build` takes them (embeddings/base.py)."""
    dim = args.model_dim
    self.dtype = embeddings.compute_dtype(args.dtype)
    self.max_len = args.max_len
    self.embed_scale = INPUT_STD * math.sqrt(dim)  # Tables have std 1/sqrt(D).
    # Own streams first (two draws, whatever the kind): the rest of `rngs` is kind-blind.
    embed_rngs, head_rngs = nnx.Rngs(params=rngs.params()), nnx.Rngs(params=rngs.params())
    self.embed = args.embed.build(embed_rngs, dense_table=dense_table,
                                  token_counts=token_counts)
    if args.positions == 'learned':
      self.positions_LxD = nnx.Param(
          INPUT_STD * jax.random.normal(rngs.params(), (args.max_len, dim), jnp.float32))
    else:
      self.positions_LxD = None
    self.blocks = nnx.List([Block(args, layer, rngs=rngs) for layer in range(args.num_layers)])
    self.final_norm = nnx.LayerNorm(dim, dtype=self.dtype, rngs=rngs)
    if args.embed.tied:
      self.head = None
    elif args.head is None:
      self.head = UntiedHead(dim, args.vocab_size, self.dtype, rngs=head_rngs)
    else:  # a head of its own kind: its attend, from the head's own stream
      self.head = args.head.build(head_rngs, token_counts=token_counts)
    self.dropout = ExampleDropout(args.dropout, site=0)
    self.vocab_size = args.vocab_size
    self.head_chunk_rows = args.head_chunk_rows  # factorized/model/loss.py
    self.head_chunk_vocab = args.head_chunk_vocab
    self.remat = args.remat
    self.quant_bits, self.quant_group = args.quant_bits, args.quant_group

  def embed_tokens(self, ids_BxL: jax.Array) -> jax.Array:
    """The residual stream's input: 0.02 sqrt(D) embed(ids) (+ learned positions)."""
    length = ids_BxL.shape[1]
    if length > self.max_len:
      raise ValueError(f'Sequence length {length} exceeds max_len=data.seq_len={self.max_len}.')
    embed = quantize.quantized_module(self.embed, self.quant_bits, self.quant_group)
    x_BxLxD = embed(ids_BxL) * jnp.asarray(self.embed_scale, self.dtype)
    if self.positions_LxD is not None:
      x_BxLxD = x_BxLxD + self.positions_LxD[...][:length].astype(self.dtype)
    return x_BxLxD

  def hidden(self, x_BxLxD: jax.Array, *, dropout_keys_B: jax.Array | None = None) -> jax.Array:
    """Blocks and final LN on the embedded inputs: the head's input x_BxLxD. With
    `remat`, each block keeps only its input for the backward pass and recomputes the rest
    there (`recomputed_block`): activation memory of one block instead of all of them."""
    x_BxLxD = self.dropout(x_BxLxD, dropout_keys_B)
    for block in self.blocks:
      if self.remat:
        x_BxLxD = recomputed_block(block, x_BxLxD, dropout_keys_B)
      else:
        x_BxLxD = block(x_BxLxD, dropout_keys_B)
    return self.final_norm(x_BxLxD)

  def head_module(self) -> nnx.Module:
    """What maps the final hidden states to logits through its `attend`: the embedding
    (tied head) or the untied head, its table fake-quantized under quantization-aware
    training."""
    head = self.embed if self.head is None else self.head
    return quantize.quantized_module(head, self.quant_bits, self.quant_group)

  def decode(self, x_BxLxD: jax.Array, *, dropout_keys_B: jax.Array | None = None) -> jax.Array:
    """Blocks, final LN and head on the embedded inputs: all logits_BxLxV, float32 (the
    loss computes them in chunks instead: factorized/model/loss.py)."""
    return self.head_module().attend(self.hidden(x_BxLxD, dropout_keys_B=dropout_keys_B))

  def __call__(self, ids_BxL: jax.Array, *, dropout_keys_B: jax.Array | None = None
               ) -> jax.Array:
    """logits_BxLxV (float32) for int32 ids; dropout (training) given one key per example."""
    return self.decode(self.embed_tokens(ids_BxL), dropout_keys_B=dropout_keys_B)

  def penalty(self) -> jax.Array:
    """The sum of the regularisers to add to the loss (float32 scalar)."""
    penalty = self.embed.penalty()
    if self.head is not None and hasattr(self.head, 'penalty'):  # a factorized head's own
      penalty = penalty + self.head.penalty()
    return penalty

