r"""The token NLL of a TransformerLM, with its output head computed in chunks of rows.

Shapes: B batch, L length, N = B L rows (tokens), C rows per chunk, D model width,
V vocabulary.

Every head maps the final hidden states to float32 logits through its `attend(x_NxD)`
(the embedding's tied head, or model.py's UntiedHead), whatever the kind. The plain loss
(`token_nll`, optax's integer-label cross-entropy on all BxLxV logits, autodiff through
the head) holds several NxV float32 buffers: the logits, their softmax and gradient. At
V=131,072 and 16x128 tokens each is 1 GiB. `nll_sum` instead walks over chunks of C rows
(the last one may be partial): for each it computes the CxV logits, their log-sum-exp,
the NLL and, in the same pass, the logits' gradient softmax - onehot, which it pushes
through the head at once (`jax.vjp` of `attend`: the chunk's rows' gradient, and the
head parameters' gradient, summed over chunks in float32). The loss is a scalar, so its
backward pass only scales those by the cotangent: no logits are saved or recomputed, the
head's FLOPs are the plain loss's, and the loss's memory is a few CxV tiles plus the
head's parameter gradient, whatever V is.

`model.head_chunk_rows` sets C; 0 (the default) picks it with `chunk_rows_for`: one chunk,
that is the plain loss, while the NxV float32 logits take at most PLAIN_LOGITS_BYTES
(768 MiB; the Brown runs, training and evaluation, stay there, and so compute bitwise what
they computed before the chunked loss existed), else balanced chunks whose CxV tile stays
within TILE_BYTES (32 MiB) but of at least K rows, K the head's width (its parameter count
over V: D for dense, about R or E for a factorized tied head). Every chunk reads the head's
parameters and adds into their gradient, so chunks much thinner than K rows turn the head
memory-bound (benchmarks/README.md: dense at V=131,072 ran 1.35x slower in 64-row chunks
than in 256-row ones). Chunking
changes only the order of float32 sums (tests/test_loss.py: the chunked loss and its
gradients equal the plain ones within 1e-5, for every kind and both heads).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# Largest NxV float32 logits the automatic chunk size leaves to the plain loss.
PLAIN_LOGITS_BYTES = 768 * 2**20
# Largest CxV float32 logits tile of an automatic chunk (benchmarks/README.md: at
# V=131,072, chunks of 64 rows made the dense step 1.35x slower than 256-row ones).
TILE_BYTES = 32 * 2**20


def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """The plain per-token negative log-likelihood in float32, from all the logits."""
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)


def chunk_rows_for(requested: int, rows: int, vocab_size: int, head_width: int) -> int:
  """Rows per chunk of the head: `requested` (model.head_chunk_rows, at most `rows`), or
  for 0 the automatic size of the module docstring. `rows` or more means the plain loss."""
  if requested < 0:
    raise ValueError(f'model.head_chunk_rows={requested} must be >= 0 (0: automatic).')
  if requested:
    return min(requested, rows)
  if rows * vocab_size * 4 <= PLAIN_LOGITS_BYTES:
    return rows
  largest = max(TILE_BYTES // (4 * vocab_size), head_width, 1)
  return math.ceil(rows / math.ceil(rows / largest))


def _apply(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State,
           x_CxD: jax.Array) -> jax.Array:
  return nnx.merge(graphdef, params, rest).attend(x_CxD)


def _chunk(apply, params, rest, x_CxD, targets_C, with_grads: bool):
  """nll_C of one chunk and, with_grads, the gradients of its sum: (dparams, dx_CxD)."""
  if with_grads:
    logits_CxV, head_vjp = jax.vjp(lambda p, x: apply(p, rest, x), params, x_CxD)
  else:
    logits_CxV = apply(params, rest, x_CxD)
  logits_CxV = logits_CxV.astype(jnp.float32)
  lse_C = jax.nn.logsumexp(logits_CxV, axis=-1)
  nll_C = lse_C - jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0]
  if not with_grads:
    return nll_C, None
  g_CxV = jnp.exp(logits_CxV - lse_C[:, None]) - jax.nn.one_hot(
      targets_C, logits_CxV.shape[-1], dtype=jnp.float32)
  return nll_C, head_vjp(g_CxV)


def _walk(apply, chunk_rows: int, params, rest, x_NxD, targets_N, with_grads: bool):
  """`_chunk` over the first chunk, the full chunks after it (lax.scan) and a partial last
  one. The first chunk's parameter gradient starts the float32 sums (no zeros to mark as
  varying over shard_map's devices).

  Returns nll_N and, with_grads, (dparams, dx_NxD) of sum(nll_N)."""
  rows, dim = x_NxD.shape
  first = min(chunk_rows, rows)
  full = first + (rows - first) // chunk_rows * chunk_rows
  as_f32 = functools.partial(jax.tree.map, lambda g: g.astype(jnp.float32))

  def step(dparams_sum, chunk):
    nll_C, grads = _chunk(apply, params, rest, *chunk, with_grads)
    if grads is None:
      return dparams_sum, (nll_C, None)
    return jax.tree.map(jnp.add, dparams_sum, as_f32(grads[0])), (nll_C, grads[1])

  nll_C, grads = _chunk(apply, params, rest, x_NxD[:first], targets_N[:first], with_grads)
  dparams = None if grads is None else as_f32(grads[0])
  nll_parts, dx_parts = [nll_C], [None if grads is None else grads[1]]
  if full > first:
    chunks = (x_NxD[first:full].reshape(-1, chunk_rows, dim),
              targets_N[first:full].reshape(-1, chunk_rows))
    dparams, (nll_MxC, dx_MxCxD) = jax.lax.scan(step, dparams, chunks)
    nll_parts.append(nll_MxC.reshape(-1))
    dx_parts.append(None if dx_MxCxD is None else dx_MxCxD.reshape(-1, dim))
  if full < rows:
    dparams, (nll_C, dx_CxD) = step(dparams, (x_NxD[full:], targets_N[full:]))
    nll_parts.append(nll_C)
    dx_parts.append(dx_CxD)
  nll_N = jnp.concatenate(nll_parts)
  if not with_grads:
    return nll_N, None
  dparams = jax.tree.map(lambda g, p: g.astype(p.dtype), dparams, params)
  return nll_N, (dparams, jnp.concatenate(dx_parts))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _nll_sum(apply, chunk_rows, params, rest, x_NxD, targets_N):
  return _walk(apply, chunk_rows, params, rest, x_NxD, targets_N, with_grads=False)[0].sum()


def _nll_sum_fwd(apply, chunk_rows, params, rest, x_NxD, targets_N):
  nll_N, grads = _walk(apply, chunk_rows, params, rest, x_NxD, targets_N, with_grads=True)
  return nll_N.sum(), grads


def _nll_sum_bwd(apply, chunk_rows, grads, ct):
  del apply, chunk_rows
  dparams, dx_NxD = jax.tree.map(lambda g: (g * ct).astype(g.dtype), grads)
  return dparams, None, dx_NxD, None


_nll_sum.defvjp(_nll_sum_fwd, _nll_sum_bwd)


def _split_head(head: nnx.Module):
  """(apply, params, rest): the head as a function of its parameters and other state."""
  graphdef, params, rest = nnx.split(head, nnx.Param, ...)
  return functools.partial(_apply, graphdef), params, rest


def head_width(head: nnx.Module, vocab_size: int) -> int:
  """K: the head's parameter count over V, rounded up (D for a dense table)."""
  count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(head, nnx.Param)))
  return -(-count // vocab_size)


def _head_inputs(model, inputs_BxL, targets_BxL, dropout_keys_B):
  x_BxLxD = model.hidden(model.embed_tokens(inputs_BxL), dropout_keys_B=dropout_keys_B)
  head = model.head_module()
  chunk_rows = chunk_rows_for(model.head_chunk_rows, targets_BxL.size, model.vocab_size,
                              head_width(head, model.vocab_size))
  return x_BxLxD, head, chunk_rows


def model_nll_sum(model, inputs_BxL: jax.Array, targets_BxL: jax.Array,
                  dropout_keys_B: jax.Array | None = None) -> jax.Array:
  """The summed token NLL of a TransformerLM on a batch, float32; differentiable in the
  model's parameters (training)."""
  x_BxLxD, head, chunk_rows = _head_inputs(model, inputs_BxL, targets_BxL, dropout_keys_B)
  if chunk_rows >= targets_BxL.size:
    return token_nll(head.attend(x_BxLxD), targets_BxL).sum()
  apply, params, rest = _split_head(head)
  return _nll_sum(apply, chunk_rows, params, rest, x_BxLxD.reshape(-1, x_BxLxD.shape[-1]),
                  targets_BxL.reshape(-1))


def model_token_nll(model, inputs_BxL: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """nll_BxL of a TransformerLM on a batch, float32, without dropout (evaluation)."""
  x_BxLxD, head, chunk_rows = _head_inputs(model, inputs_BxL, targets_BxL, None)
  if chunk_rows >= targets_BxL.size:
    return token_nll(head.attend(x_BxLxD), targets_BxL)
  apply, params, rest = _split_head(head)
  nll_N, _ = _walk(apply, chunk_rows, params, rest, x_BxLxD.reshape(-1, x_BxLxD.shape[-1]),
                   targets_BxL.reshape(-1), with_grads=False)
  return nll_N.reshape(targets_BxL.shape)
