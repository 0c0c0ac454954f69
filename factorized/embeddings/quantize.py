r"""Symmetric integer quantization of the vocabulary tables, after training or in it (QAT).

Shapes: a table parameter as a matrix of N rows and C columns, K = C / G groups of G
columns in a row (G = C: one group, the row), b bits.

  s  = max|w| / (2^(b-1) - 1)                          float32, over a row or a group
  q  = clip(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1)  int: b = 8 int8, b = 4 int4
  w' = q s                                             what the model computes with

round is to nearest, ties to even; the grid is symmetric (int8 -127..127, int4 -7..7); a
row or group of zeros has s = 0 and q = 0. |w - w'| <= s / 2 for every entry. Both divisions
are IEEE float32 divisions, as numpy computes them (`_divide`: XLA would otherwise multiply by
a reciprocal, which can differ in the last bit).

Which arrays: the matrices among a module's `TABLE_PARAMS` (the dense table, every factor
of every kind, an untied head's W): `table_paths`. A 2-D parameter is its own matrix; a TT
core G_k (r x v_k x d_k x r') is its (r v_k) x (d_k r') unfolding, the leading half of its
axes indexing the rows (`matrix_shape`). Vectors (svd's s, albert's b) and what a head adds
beyond its table (ALBERT's MLM head) stay float32.

Bytes as stored (`array_bytes`): a quantized matrix ceil(N C b / 8) bytes of packed
integers (`pack`: int4 two values a byte) plus 4 per scale (N K); a float32 array 4 a
value. factorized/model/costs.py sums them over the run's tables (summary.json `bytes`).

Quantization-aware training (`model.embed.quant_bits`, `quant_group`): `quantized_module`
is a module with its table matrices replaced by `fake_quantize(w) = w'`, whose gradient is
the straight-through one, that of w + stop_gradient(w' - w): the identity. Its value is w'
exactly (w + (w' - w) can differ from w' in the last bit), so a trained model, evaluated,
computes with exactly the integers and scales `quantize` stores. The model applies it to its
embedding and head (factorized/model/transformer.py), every kind alike.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

BITS = (0, 4, 8)  # model.embed.quant_bits: 0 = float32 tables
FLOAT_BYTES = 4  # a float32 value, a scale


def qmax(bits: int) -> int:
  """The largest integer of the symmetric b-bit grid, 2^(b-1) - 1."""
  return 2 ** (bits - 1) - 1


def is_matrix(shape: tuple[int, ...]) -> bool:
  """Whether a table parameter of this shape is quantized (ndim >= 2; vectors are not)."""
  return len(shape) >= 2


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """(N rows, C columns) of a table parameter: its leading half of axes, its trailing half."""
  half = len(shape) // 2
  return math.prod(shape[:half]), math.prod(shape[half:])


def check_bits(bits, field: str) -> int:
  """`bits` as an int of BITS; a ValueError naming `field` otherwise."""
  if isinstance(bits, bool) or bits not in BITS:
    raise ValueError(f'{field}={bits!r} is not a bit width: use 8 (int8), 4 (int4) or 0 '
                     '(float32 tables).')
  return int(bits)


def check_group(group, field: str, shapes: dict[tuple, tuple[int, ...]] | None = None) -> int:
  """`group` as an int >= 0 that divides the columns of every matrix of `shapes` ({path:
  shape}); a ValueError naming `field` and the table otherwise."""
  if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 0:
    raise ValueError(f'{field}={group!r} must be an integer >= 0: 0 for one scale per row, '
                     'G for one per G columns.')
  columns = {path: matrix_shape(shape)[1] for path, shape in (shapes or {}).items()
             if is_matrix(shape)}
  bad = [path for path, count in columns.items() if group and count % group]
  if bad:
    common = math.gcd(*columns.values())
    divisors = [d for d in range(1, common + 1) if common % d == 0]
    raise ValueError(f'{field}={group} does not divide the {columns[bad[0]]} columns of the '
                     f'table {".".join(map(str, bad[0]))} {tuple(shapes[bad[0]])}: use a '
                     f'divisor of every table\'s columns ({divisors}), or 0 (one scale per '
                     'row).')
  return int(group)


def _divide(a: jax.Array, b: jax.Array) -> jax.Array:
  """a / b, b broadcast to a's shape, correctly rounded: XLA rewrites a division by a
  broadcast array into a product with its reciprocal, unless the barrier hides the
  broadcast."""
  return a / jax.lax.optimization_barrier(jnp.broadcast_to(b, a.shape))


def _groups(w: jax.Array, group: int) -> jax.Array:
  """w as N x K x G (G = C when group is 0)."""
  rows, columns = matrix_shape(w.shape)
  group = group or columns
  return jnp.reshape(w, (rows, columns // group, group))


def quantize(w: jax.typing.ArrayLike, bits: int, group: int = 0) -> tuple[jax.Array, jax.Array]:
  """(q, s): int8 q of w's shape (values within the b-bit grid) and float32 scales N x K."""
  w_NxKxG = _groups(jnp.asarray(w, jnp.float32), group)
  s_NxK = _divide(jnp.max(jnp.abs(w_NxKxG), axis=-1), jnp.float32(qmax(bits)))
  divisor_NxK = jnp.where(s_NxK > 0, s_NxK, jnp.ones((), jnp.float32))
  q_NxKxG = jnp.clip(jnp.round(_divide(w_NxKxG, divisor_NxK[..., None])), -qmax(bits),
                     qmax(bits))
  return q_NxKxG.astype(jnp.int8).reshape(jnp.shape(w)), s_NxK


def dequantize(q: jax.typing.ArrayLike, s_NxK: jax.typing.ArrayLike) -> jax.Array:
  """w' = q s, float32, of q's shape."""
  q = jnp.asarray(q)
  group = matrix_shape(q.shape)[1] // s_NxK.shape[-1]
  return (_groups(q.astype(jnp.float32), group) * s_NxK[..., None]).reshape(q.shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def fake_quantize(w: jax.Array, bits: int, group: int = 0) -> jax.Array:
  """w' = dequantize(quantize(w)), with the straight-through gradient (the identity)."""
  return dequantize(*quantize(w, bits, group)).astype(w.dtype)


@fake_quantize.defjvp
def _fake_quantize_jvp(bits, group, primals, tangents):
  (w,), (w_dot,) = primals, tangents
  return fake_quantize(w, bits, group), w_dot


def pack(q: jax.typing.ArrayLike, bits: int) -> np.ndarray:
  """The integers as stored: uint8, int8 one a byte, int4 two a byte (low nibble first,
  two's complement); ceil(n b / 8) bytes."""
  flat = np.asarray(q, np.int8).reshape(-1)
  if bits == 8:
    return flat.view(np.uint8).copy()
  nibbles = (np.pad(flat, (0, flat.size % 2)).view(np.uint8) & 0xF).reshape(-1, 2)
  return (nibbles[:, 0] | (nibbles[:, 1] << 4)).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
  """The int8 q of `pack`'s bytes."""
  if bits == 8:
    return packed.view(np.int8).reshape(shape)
  nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1).astype(np.int8)
  signed = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
  return signed[:math.prod(shape)].reshape(shape)


def array_bytes(shape: tuple[int, ...], bits: int, group: int = 0) -> int:
  """Bytes of a table parameter as stored: packed integers and float32 scales when it is
  quantized (a matrix, bits > 0), else 4 a value."""
  size = math.prod(shape)
  if not bits or not is_matrix(shape):
    return FLOAT_BYTES * size
  rows, columns = matrix_shape(shape)
  return -(-size * bits // 8) + FLOAT_BYTES * rows * (columns // (group or columns))


def table_paths(module: nnx.Module) -> list[tuple]:
  """The paths (in the module's Param state) of its table matrices: the parameters its
  `TABLE_PARAMS` names, of ndim >= 2."""
  entries = getattr(module, 'TABLE_PARAMS', ())
  prefixes = [(entry,) if isinstance(entry, str) else tuple(entry) for entry in entries]
  return [path for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))
          if any(path[:len(p)] == p for p in prefixes) and is_matrix(variable.shape)]


def quantize_tables(module: nnx.Module, bits: int, group: int = 0
                    ) -> dict[tuple, tuple[jax.Array, jax.Array]]:
  """{path: (q, s)} of the module's table matrices (`table_paths`)."""
  params = dict(nnx.to_flat_state(nnx.state(module, nnx.Param)))
  return {path: quantize(params[path][...], bits, group) for path in table_paths(module)}


def quantized_module(module: nnx.Module, bits: int, group: int = 0) -> nnx.Module:
  """`module` with every table matrix w replaced by fake_quantize(w) (the module itself when
  bits is 0), for the forward pass of quantization-aware training."""
  if not bits:
    return module
  paths = set(table_paths(module))
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params = nnx.map_state(
      lambda path, variable: variable.replace(fake_quantize(variable[...], bits, group))
      if tuple(path) in paths else variable, params)
  return nnx.merge(graphdef, params, rest)
