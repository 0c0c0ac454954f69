"""Large arrays updated in place, a slice of rows at a time.

XLA:CPU writes a new buffer for an all-reduce even over one device, and materialises an
element-wise result that two fusions read (the clipped gradient that both of Adam's
moments read) beside its input: each such step over the VxD table's gradient holds it
twice (at V=131,072, D=256: 2 x 128 MiB). `update_rows` computes the same values a slice
of rows at a time and writes each back over the input, so the step holds the array once
and a slice (step.py's psum of the gradient, optim.py's clipping).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

# Arrays larger than LARGE_BYTES are updated in slices of rows of at most SLICE_BYTES.
# Smaller ones, Brown's tables (17,906 x 128 float32: 9 MiB) among them, are left whole:
# slicing changes XLA's fusions, and with them the order of the gradient norm's float32
# sum, so the Brown runs would no longer reproduce bitwise.
LARGE_BYTES = 32 * 2**20
SLICE_BYTES = 8 * 2**20


def update_rows(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                large_bytes: int | None = None, slice_bytes: int | None = None) -> jax.Array:
  """fn(x) for a row-local fn (each output row from the same input row): on x whole when
  it is at most `large_bytes` (default LARGE_BYTES) or a scalar, else on static slices of
  rows of at most `slice_bytes` (default SLICE_BYTES), each written back over x in place."""
  large_bytes = LARGE_BYTES if large_bytes is None else large_bytes
  slice_bytes = SLICE_BYTES if slice_bytes is None else slice_bytes
  if x.ndim == 0 or x.nbytes <= large_bytes:
    return fn(x)
  size = max(1, slice_bytes // (x.nbytes // x.shape[0]))
  for start in range(0, x.shape[0], size):
    part = fn(jax.lax.slice_in_dim(x, start, min(start + size, x.shape[0])))
    x = jax.lax.dynamic_update_slice_in_dim(x, part, start, 0)
  return x
