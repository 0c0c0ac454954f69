"""The one data-parallel layout: a 1-D ('data',) mesh over every device of every process.

Parameters and optimizer state are replicated; batches are split along their first
axis. Several hosts join through `jax.distributed.initialize()` (see train.py); the
same code then sees all devices of all processes in `jax.devices()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'
T = TypeVar('T')


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ('data',) over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters and optimizer state: a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of batches: split along the leading (example) axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = 'train.batch_size',
                     micro_batches: int = 1) -> None:
  """Raises a ValueError, before any compilation, when `batch_size` cannot be split evenly
  into `micro_batches` micro-batches over the mesh's devices."""
  multiple = mesh.devices.size * micro_batches
  if batch_size <= 0 or batch_size % multiple:
    per = f' x train.grad_accum_steps ({micro_batches})' if micro_batches > 1 else ''
    raise ValueError(
        f'{field}={batch_size} must be a positive multiple of the device count '
        f'({mesh.devices.size}, over {jax.process_count()} process(es)){per}; e.g. '
        f'--config.{field}={max(1, batch_size // multiple) * multiple}.')


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the global batch into global sharded arrays."""
  sharding = batch_sharding(mesh)
  return {
      name: jax.make_array_from_process_local_data(sharding, value)
      for name, value in local_batch.items()
  }


def primary_first(fn: Callable[[], T], name: str) -> T:
  """Runs `fn` on process 0, then (after a barrier) on the others.

  For work on shared files (the workdir, the tokenisation cache): process 0 writes them,
  the others then find them ready instead of racing to write the same paths.
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f'factorized:{name}')
  return result if jax.process_index() == 0 else fn()
