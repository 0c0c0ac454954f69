"""factorized/train/inplace.py: a row-local update done in slices of rows equals the whole one."""

import functools

import jax
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from factorized.runtime import parallel
from factorized.train import inplace

# 37 rows of 5 float32 (740 bytes): slices of 3 rows (64 bytes), the last one of 1 row.
SLICED = {'large_bytes': 64, 'slice_bytes': 64}


def test_small_arrays_are_updated_whole_and_large_ones_by_slices():
  x = jax.random.normal(jax.random.key(0), (37, 5))
  calls = []

  def fn(part):
    calls.append(part.shape)
    return part * 2 + 1  # exactly rounded: the same bits however it is vectorised

  np.testing.assert_array_equal(jax.jit(lambda x: inplace.update_rows(fn, x, **SLICED))(x),
                                x * 2 + 1)
  assert calls == [(3, 5)] * 12 + [(1, 5)]
  calls.clear()
  inplace.update_rows(fn, x)  # 740 bytes <= LARGE_BYTES: whole
  assert calls == [(37, 5)]


def test_a_sliced_psum_gives_the_psum_bitwise():
  mesh = parallel.make_mesh(jax.devices()[:4])
  x = jax.device_put(jax.random.normal(jax.random.key(1), (4 * 37, 5)),
                     jax.NamedSharding(mesh, P(parallel.DATA_AXIS)))
  psum = functools.partial(lax.psum, axis_name=parallel.DATA_AXIS)
  sliced, whole = jax.jit(jax.shard_map(
      lambda x: (inplace.update_rows(psum, x, **SLICED), psum(x)), mesh=mesh,
      in_specs=P(parallel.DATA_AXIS), out_specs=P(), check_vma=False))(x)
  np.testing.assert_array_equal(sliced, whole)
  np.testing.assert_allclose(whole, x.reshape(4, 37, 5).sum(0), rtol=1e-6)
