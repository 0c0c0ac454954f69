r"""The token NLL of a TransformerLM, with its output head computed in chunks of rows.

Shapes: B batch, L length, N = B L rows (tokens), C rows per chunk, D model width,
V vocabulary.

Every head maps the final hidden states to float32 logits through its `attend(x_NxD)` (the
embedding's tied head, or transformer.py's UntiedHead), whatever the kind, or in parts
(`attend_parts`: tt's table slices, adaptive's bands, in a vocabulary order of the module's
own, the targets mapped into it): `parts_nll` takes the log-sum-exp over the parts.
The plain loss (`token_nll`, optax's integer-label cross-entropy on all BxLxV logits,
autodiff through the head) holds several NxV float32 buffers: the logits, their softmax
and gradient. At V=131,072 and 16x128 tokens each is 1 GiB. `nll_sum` instead walks over
chunks of C rows (the last one may be partial): for each it computes the CxV logits, their
log-sum-exp, the NLL and, in the same pass, the logits' gradient softmax - onehot, which
it pushes through the head at once (`jax.vjp` of `attend`: the chunk's rows' gradient, and
the head parameters' gradient, summed over chunks in float32). The loss is a scalar, so
its backward pass only scales those by the cotangent: no logits are saved or recomputed,
the head's FLOPs are the plain loss's, and the loss's memory is a few CxV tiles plus the
head's parameter gradient, whatever V is.

`model.head_chunk_rows` sets C; 0 (the default) picks it with `chunk_rows_for`: one chunk,
that is the plain loss, while the NxV float32 logits take at most PLAIN_LOGITS_BYTES
(768 MiB; the Brown runs, training and evaluation, stay there, and so compute bitwise what
they computed before the chunked loss existed), else balanced chunks whose CxV tile stays
within TILE_BYTES (32 MiB) but of at least K rows, K the head's width (its parameter count
over V: D for dense, about R or E for a factorized tied head). Every chunk reads the head's
parameters and adds into their gradient, so chunks much thinner than K rows turn the head
memory-bound (benchmarks/README.md: dense at V=131,072 ran 1.35x slower in 64-row chunks
than in 256-row ones).

A table head, one whose logits are `project_to_vocab(x, T)` with T (VxD) its only
parameter (dense's tied head and the untied head: the module names T in LOGITS_TABLE),
has a VxD gradient as large as a CxV tile, so the chunk's vjp above would hold it twice
(its own and the sum). Such a head also walks the vocabulary, in slices of S rows
(`model.head_chunk_vocab`, or for 0 `vocab_slice_rows`: CxS tiles and SxD slices within
SLICE_BYTES, 8 MiB):
`_table_nll_sum`'s forward pass takes an online log-sum-exp over the slices' logits, and
its backward pass recomputes each slice's logits, multiplies their gradient by the
cotangent and adds the slice's table gradient into the one VxD sum in place. The head's
FLOPs are 4/3 of the plain loss's (the logits twice); its memory is the table gradient
once plus CxS tiles (with train/step.py's in-place psum and train/optim.py's in-place
clipping, the compiled dense step at V=131,072 holds 22% of one BxLxV buffer).

Chunking changes only the order of float32 sums (tests/test_loss.py: the chunked loss and
its gradients equal the plain ones within 1e-5, for every kind and both heads, with
partial last chunks of rows and of the vocabulary).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from factorized.embeddings import base

# Largest NxV float32 logits the automatic chunk size leaves to the plain loss.
PLAIN_LOGITS_BYTES = 768 * 2**20
# Largest CxV float32 logits tile of an automatic chunk (benchmarks/README.md: at
# V=131,072, chunks of 64 rows made the dense step 1.35x slower than 256-row ones).
TILE_BYTES = 32 * 2**20
# Largest CxS logits tile, and SxD table slice, of a table head's vocabulary slices.
SLICE_BYTES = 8 * 2**20


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


@dataclasses.dataclass(frozen=True)
class _Head:
  """A head as a function of its parameters and other state: `apply(params, rest, x)`.
  `table`: its logits are project_to_vocab(x in `dtype`, T) with T its only parameter (the
  module names T in LOGITS_TABLE), so the loss walks the vocabulary in slices of
  `vocab_slice_rows(chunk_vocab, ...)` rows (chunk_vocab: model.head_chunk_vocab)."""
  graphdef: nnx.GraphDef
  table: bool
  dtype: Any
  chunk_vocab: int = 0

  def apply(self, params: nnx.State, rest: nnx.State, x_CxD: jax.Array) -> jax.Array:
    return head_logits(nnx.merge(self.graphdef, params, rest), x_CxD)


def head_logits(head: nnx.Module, x_BxLxD: jax.Array) -> jax.Array:
  """All the head's logits, in the vocabulary order of `head_targets` (`attend_parts`
  concatenated where the module has them, else `attend`: id order)."""
  attend_parts = getattr(head, 'attend_parts', None)
  return head.attend(x_BxLxD) if attend_parts is None else jnp.concatenate(
      attend_parts(x_BxLxD), axis=-1)


def head_targets(head: nnx.Module, targets_BxL: jax.Array) -> jax.Array:
  """The targets' positions in the head's vocabulary order (`ordered_ids`, else ids)."""
  ordered_ids = getattr(head, 'ordered_ids', None)
  return targets_BxL if ordered_ids is None else ordered_ids(targets_BxL)


def parts_nll(parts: list[jax.Array], targets_BxL: jax.Array) -> jax.Array:
  """The per-token NLL in float32 from logits in parts over consecutive ranges of the
  vocabulary (targets in that order): the log-sum-exp over the parts' log-sum-exps, less
  the target's logit taken from its own part. Equal to `token_nll` of the concatenated
  parts to float32 rounding; no BxLxV array is made beyond the parts themselves."""
  parts = [part.astype(jnp.float32) for part in parts]
  lse_BxLxP = jnp.stack([jax.nn.logsumexp(part, axis=-1) for part in parts], axis=-1)
  return jax.nn.logsumexp(lse_BxLxP, axis=-1) - _picked(parts, targets_BxL)[0]


def _picked(parts: list[jax.Array], targets_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(the target's logit, the largest logit) per token of float32 logits in parts."""
  target_BxL, max_BxL, start = jnp.zeros(targets_BxL.shape, jnp.float32), None, 0
  for part in parts:
    local_BxL = targets_BxL - start
    size = part.shape[-1]
    picked_BxL = jnp.take_along_axis(part, jnp.clip(local_BxL, 0, size - 1)[..., None],
                                     axis=-1)[..., 0]
    target_BxL += jnp.where((local_BxL >= 0) & (local_BxL < size), picked_BxL, 0.0)
    max_BxL = part.max(axis=-1) if max_BxL is None else jnp.maximum(max_BxL, part.max(axis=-1))
    start += size
  return target_BxL, max_BxL


def _plain_stats(head: nnx.Module, x_BxLxD: jax.Array, targets_BxL: jax.Array
                 ) -> dict[str, jax.Array]:
  """TOKEN_STATS from all the logits at once (the NLL exactly as `_plain_nll` gives it)."""
  attend_parts = getattr(head, 'attend_parts', None)
  parts = [head.attend(x_BxLxD)] if attend_parts is None else attend_parts(x_BxLxD)
  nll_BxL = (token_nll(parts[0], targets_BxL) if attend_parts is None
             else parts_nll(parts, targets_BxL))
  target_BxL, max_BxL = _picked([part.astype(jnp.float32) for part in parts], targets_BxL)
  return {'nll': nll_BxL, 'max_logit': max_BxL, 'target_logit': target_BxL}


def _plain_nll(head: nnx.Module, x_BxLxD: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """nll_BxL from all the logits at once: `parts_nll` for a head in parts, else
  `token_nll` of `attend`."""
  attend_parts = getattr(head, 'attend_parts', None)
  if attend_parts is None:
    return token_nll(head.attend(x_BxLxD), targets_BxL)
  return parts_nll(attend_parts(x_BxLxD), targets_BxL)


def vocab_slice_rows(requested: int, chunk_rows: int, vocab_size: int, dim: int) -> int:
  """S: vocabulary rows per slice of a table head (`_table_nll`, `_table_grads`):
  `requested` (model.head_chunk_vocab, at most V), or for 0 the most that keep a chunk's
  CxS logits tile and the SxD table slice each within SLICE_BYTES."""
  if requested < 0:
    raise ValueError(f'model.head_chunk_vocab={requested} must be >= 0 (0: automatic).')
  if requested:
    return min(requested, vocab_size)
  return max(1, min(vocab_size, SLICE_BYTES // (4 * max(chunk_rows, dim))))


def _over_vocab(body, carry, vocab_size: int, size: int):
  """carry = body(carry, start, size) over the vocabulary in slices of `size` rows: a
  fori_loop over the full slices, then the partial last one."""
  full = vocab_size // size
  carry = jax.lax.fori_loop(0, full, lambda i, carry: body(carry, i * size, size), carry)
  if full * size < vocab_size:
    carry = body(carry, full * size, vocab_size - full * size)
  return carry


def _over_rows(body, carry, chunk_rows: int, rows_N):
  """(carry, outputs_N) of `carry, outputs_C = body(carry, rows_C)` over chunks of rows of
  the arrays `rows_N`: the first chunk, the full chunks after it (lax.scan) and a partial
  last one; the outputs concatenated over rows. `carry` may be None for the first chunk."""
  rows = jax.tree.leaves(rows_N)[0].shape[0]
  first = min(chunk_rows, rows)
  full = first + (rows - first) // chunk_rows * chunk_rows
  carry, outputs = body(carry, jax.tree.map(lambda a: a[:first], rows_N))
  parts = [outputs]
  if full > first:
    chunks = jax.tree.map(lambda a: a[first:full].reshape(-1, chunk_rows, *a.shape[1:]),
                          rows_N)
    carry, outputs_M = jax.lax.scan(body, carry, chunks)
    parts.append(jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), outputs_M))
  if full < rows:
    carry, outputs = body(carry, jax.tree.map(lambda a: a[full:], rows_N))
    parts.append(outputs)
  return carry, jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


def _table_logits(head: _Head, table_VxD, h_CxD, start, size):
  """The logits of vocabulary rows [start, start + size) and their vjp."""
  table_SxD = jax.lax.dynamic_slice_in_dim(table_VxD, start, size)
  return jax.vjp(base.project_to_vocab, h_CxD.astype(head.dtype), table_SxD)


def _table_nll(head: _Head, table_VxD, x_CxD, targets_C):
  """(nll_C, lse_C, (max_C, target_C)) of a table head's chunk, by an online log-sum-exp
  over S-row slices of the vocabulary: CxS tiles, never CxV. max_C and target_C, the
  largest and the target's logit, are what `model_token_stats` reports."""
  (vocab_size, dim), rows = table_VxD.shape, x_CxD.shape[0]

  def statistics(carry, start, size):
    max_C, sum_C, target_C = carry
    logits_CxS, _ = _table_logits(head, table_VxD, x_CxD, start, size)
    new_max_C = jnp.maximum(max_C, logits_CxS.max(axis=-1))
    sum_C = (sum_C * jnp.exp(max_C - new_max_C)
             + jnp.exp(logits_CxS - new_max_C[:, None]).sum(axis=-1))
    local_C = targets_C - start
    picked_C = jnp.take_along_axis(logits_CxS, jnp.clip(local_C, 0, size - 1)[:, None],
                                   axis=-1)[:, 0]
    return new_max_C, sum_C, jnp.where((local_C >= 0) & (local_C < size), picked_C, target_C)

  # *_like(targets): the carries vary over shard_map's devices as the targets do.
  zeros_C = jnp.zeros_like(targets_C, jnp.float32)
  max_C, sum_C, target_C = _over_vocab(
      statistics, (jnp.full_like(zeros_C, -jnp.inf), zeros_C, zeros_C), vocab_size,
      vocab_slice_rows(head.chunk_vocab, rows, vocab_size, dim))
  lse_C = max_C + jnp.log(sum_C)
  return lse_C - target_C, lse_C, (max_C, target_C)


def _table_grads(head: _Head, table_VxD, dtable_VxD, x_CxD, targets_C, lse_C, ct):
  """(dtable + the chunk's table gradient, dx_CxD) of ct * sum(nll_C): each slice's logits
  recomputed, their gradient ct (softmax - onehot) pushed through project_to_vocab, dx
  summed over slices and the slice's table gradient added into dtable in place."""
  (vocab_size, dim), rows = table_VxD.shape, x_CxD.shape[0]

  def gradients(carry, start, size):
    dx_CxD, dtable_VxD = carry
    logits_CxS, head_vjp = _table_logits(head, table_VxD, x_CxD, start, size)
    g_CxS = ct * (jnp.exp(logits_CxS - lse_C[:, None]) - jax.nn.one_hot(
        targets_C - start, size, dtype=jnp.float32))  # out-of-slice targets: no one
    dh_CxD, dtable_SxD = head_vjp(g_CxS)
    dtable_SxD += jax.lax.dynamic_slice_in_dim(dtable_VxD, start, size)
    return (dx_CxD + dh_CxD.astype(jnp.float32),
            jax.lax.dynamic_update_slice_in_dim(dtable_VxD, dtable_SxD, start, 0))

  dx_CxD, dtable_VxD = _over_vocab(
      gradients, (jnp.zeros_like(x_CxD, jnp.float32), dtable_VxD), vocab_size,
      vocab_slice_rows(head.chunk_vocab, rows, vocab_size, dim))
  return dtable_VxD, dx_CxD.astype(x_CxD.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _table_nll_sum(head, chunk_rows, table_VxD, x_NxD, targets_N):
  """sum(nll_N) of a table head in chunks of rows and slices of the vocabulary; the
  backward pass recomputes the logits (the head's FLOPs: 4/3 of the plain loss's)."""
  return _table_nll_sum_fwd(head, chunk_rows, table_VxD, x_NxD, targets_N)[0]


def _table_nll_sum_fwd(head, chunk_rows, table_VxD, x_NxD, targets_N):
  _, (nll_N, lse_N) = _over_rows(
      lambda carry, chunk: (carry, _table_nll(head, table_VxD, *chunk)[:2]), None,
      chunk_rows, (x_NxD, targets_N))
  return nll_N.sum(), (table_VxD, x_NxD, targets_N, lse_N)


def _table_nll_sum_bwd(head, chunk_rows, residuals, ct):
  table_VxD, x_NxD, targets_N, lse_N = residuals
  dtable_VxD, dx_NxD = _over_rows(
      lambda dtable_VxD, chunk: _table_grads(head, table_VxD, dtable_VxD, *chunk, ct),
      jnp.zeros_like(table_VxD, jnp.float32), chunk_rows, (x_NxD, targets_N, lse_N))
  return dtable_VxD.astype(table_VxD.dtype), dx_NxD, None


_table_nll_sum.defvjp(_table_nll_sum_fwd, _table_nll_sum_bwd)


def _chunk(head: _Head, params, rest, x_CxD, targets_C, dparams_sum, with_grads: bool):
  """nll_C of one chunk and, with_grads, (dparams_sum + the float32 gradients of its sum
  w.r.t. the head's parameters, dx_CxD); dparams_sum None starts the sums (no zeros to
  mark as varying over shard_map's devices)."""
  if with_grads:
    logits_CxV, head_vjp = jax.vjp(lambda p, x: head.apply(p, rest, x), params, x_CxD)
  else:
    logits_CxV = head.apply(params, rest, x_CxD)
  logits_CxV = logits_CxV.astype(jnp.float32)
  lse_C = jax.nn.logsumexp(logits_CxV, axis=-1)
  nll_C = lse_C - jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0]
  if not with_grads:  # (evaluation) the largest and the target's logit besides
    target_C = jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0]
    return dparams_sum, (nll_C, (logits_CxV.max(axis=-1), target_C))
  g_CxV = jnp.exp(logits_CxV - lse_C[:, None]) - jax.nn.one_hot(
      targets_C, logits_CxV.shape[-1], dtype=jnp.float32)
  dparams, dx_CxD = head_vjp(g_CxV)
  dparams = jax.tree.map(lambda g: g.astype(jnp.float32), dparams)
  if dparams_sum is not None:
    dparams = jax.tree.map(jnp.add, dparams_sum, dparams)
  return dparams, (nll_C, dx_CxD)


def _walk(head: _Head, chunk_rows: int, params, rest, x_NxD, targets_N, with_grads: bool):
  """`_chunk` over chunks of rows: nll_N and, with_grads, (dparams, dx_NxD) of sum(nll_N),
  else (max_N, target_N), the largest and the target's logit."""
  dparams, (nll_N, dx_NxD) = _over_rows(
      lambda dparams_sum, chunk: _chunk(head, params, rest, *chunk, dparams_sum, with_grads),
      None, chunk_rows, (x_NxD, targets_N))
  if not with_grads:
    return nll_N, dx_NxD
  dparams = jax.tree.map(lambda g, p: g.astype(p.dtype), dparams, params)
  return nll_N, (dparams, dx_NxD)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _nll_sum(head, chunk_rows, params, rest, x_NxD, targets_N):
  return _walk(head, chunk_rows, params, rest, x_NxD, targets_N, with_grads=False)[0].sum()


def _nll_sum_fwd(head, chunk_rows, params, rest, x_NxD, targets_N):
  nll_N, grads = _walk(head, chunk_rows, params, rest, x_NxD, targets_N, with_grads=True)
  return nll_N.sum(), grads


def _nll_sum_bwd(head, chunk_rows, grads, ct):
  del head, chunk_rows
  dparams, dx_NxD = jax.tree.map(lambda g: (g * ct).astype(g.dtype), grads)
  return dparams, None, dx_NxD, None


_nll_sum.defvjp(_nll_sum_fwd, _nll_sum_bwd)


def _split_head(head: nnx.Module, chunk_vocab: int = 0
                ) -> tuple[_Head, nnx.State, nnx.State]:
  """(_Head, params, rest)."""
  graphdef, params, rest = nnx.split(head, nnx.Param, ...)
  name = getattr(head, 'LOGITS_TABLE', None)
  table = name is not None and [path for path, _ in nnx.to_flat_state(params)] == [(name,)]
  return _Head(graphdef, table, getattr(head, 'dtype', None), chunk_vocab), params, rest


def head_width(head: nnx.Module, vocab_size: int) -> int:
  """K: the head's parameter count over V, rounded up (D for a dense table)."""
  count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(head, nnx.Param)))
  return -(-count // vocab_size)


def _head_inputs(model, inputs_BxL, targets_BxL, dropout_keys_B):
  x_BxLxD = model.hidden(model.embed_tokens(inputs_BxL), dropout_keys_B=dropout_keys_B)
  head = model.head_module()
  chunk_rows = chunk_rows_for(model.head_chunk_rows, targets_BxL.size, model.vocab_size,
                              head_width(head, model.vocab_size))
  return x_BxLxD, head, head_targets(head, targets_BxL), chunk_rows


def model_nll_sum(model, inputs_BxL: jax.Array, targets_BxL: jax.Array,
                  dropout_keys_B: jax.Array | None = None) -> jax.Array:
  """The summed token NLL of a TransformerLM on a batch, float32; differentiable in the
  model's parameters (training)."""
  x_BxLxD, head, targets_BxL, chunk_rows = _head_inputs(model, inputs_BxL, targets_BxL,
                                                        dropout_keys_B)
  if chunk_rows >= targets_BxL.size:
    return _plain_nll(head, x_BxLxD, targets_BxL).sum()
  head_plan, params, rest = _split_head(head, model.head_chunk_vocab)
  x_NxD, targets_N = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]), targets_BxL.reshape(-1)
  if head_plan.table:
    return _table_nll_sum(head_plan, chunk_rows, jax.tree.leaves(params)[0], x_NxD, targets_N)
  return _nll_sum(head_plan, chunk_rows, params, rest, x_NxD, targets_N)


TOKEN_STATS = ('nll', 'max_logit', 'target_logit')  # what model_token_stats gives per token


def model_token_stats(model, inputs_BxL: jax.Array, targets_BxL: jax.Array
                      ) -> dict[str, jax.Array]:
  """Per token of a TransformerLM on a batch, float32, without dropout (evaluation): `nll`,
  and the largest and the target's logit (`max_logit`, `target_logit`: the target is the
  top-1 prediction when they are equal), whatever path the head takes."""
  x_BxLxD, head, targets_BxL, chunk_rows = _head_inputs(model, inputs_BxL, targets_BxL, None)
  if chunk_rows >= targets_BxL.size:
    return _plain_stats(head, x_BxLxD, targets_BxL)
  head_plan, params, rest = _split_head(head, model.head_chunk_vocab)
  x_NxD, targets_N = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]), targets_BxL.reshape(-1)
  if head_plan.table:
    table_VxD = jax.tree.leaves(params)[0]
    _, (nll_N, _, (max_N, target_N)) = _over_rows(
        lambda carry, chunk: (carry, _table_nll(head_plan, table_VxD, *chunk)), None,
        chunk_rows, (x_NxD, targets_N))
  else:
    nll_N, (max_N, target_N) = _walk(head_plan, chunk_rows, params, rest, x_NxD, targets_N,
                                     with_grads=False)
  return {name: value.reshape(targets_BxL.shape)
          for name, value in zip(TOKEN_STATS, (nll_N, max_N, target_N), strict=True)}


def model_token_nll(model, inputs_BxL: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """nll_BxL of a TransformerLM on a batch, float32, without dropout (evaluation)."""
  return model_token_stats(model, inputs_BxL, targets_BxL)['nll']
