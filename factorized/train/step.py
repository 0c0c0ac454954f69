"""Pure train and eval steps, data-parallel over the ('data',) mesh with jax.shard_map.

Shapes: B batch (per device inside shard_map), L length, V vocabulary.

The loss is the global token-weighted mean NLL: every device sums its NLL, the sums
and the token counts are psum-ed, and the gradient is the psum of per-device
gradients of (local NLL sum / global token count). This is exact whatever the
device count, never a mean of per-device means.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from factorized import metrics as metrics_lib
from factorized.model import loss as loss_lib
from factorized.runtime.parallel import DATA_AXIS
from factorized.train import inplace


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; a pure pytree, donated to each step."""

  step: jax.Array  # int32 scalar: number of updates applied so far
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # uint32 key data of the base key (typed keys do not checkpoint)


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """The static half of an NNX model (graphdef) and its non-trainable constants."""

  graphdef: nnx.GraphDef
  consts: nnx.State

  def merge(self, params: nnx.State) -> nnx.Module:
    return nnx.merge(self.graphdef, params, self.consts)


@dataclasses.dataclass(frozen=True)
class BoundStep:
  """A jitted step with the model's constants bound as its second argument; `lower` and
  `compile` for XLA's cost and memory analysis (benchmarks/step_time.py, tests/test_loss.py)."""

  jitted: Callable
  consts: nnx.State

  def __call__(self, first, *args):
    return self.jitted(first, self.consts, *args)

  def lower(self, first, *args):
    return self.jitted.lower(first, self.consts, *args)

  def compile(self, first, *args) -> BoundStep:
    """This step compiled once for these arguments' shapes: its `jitted` is XLA's
    executable (memory_analysis, as_text), called as before."""
    return dataclasses.replace(self, jitted=self.lower(first, *args).compile())


def make_train_step(
    parts: ModelParts,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    *,
    grad_accum_steps: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns the jitted step `(state, batch) -> (state, metrics)`; `state` is donated.

  Dropout keys: fold_in(base_key, step), then one per example, folding in the example's
  row in the global batch; so the masks, and the result, do not depend on the device
  count or on gradient accumulation. Metrics are replicated scalars: loss (train NLL per
  token, without the regulariser), penalty, grad_norm and lr.
  """

  def per_device(state: TrainState, consts: nnx.State, batch: dict):
    num_devices = lax.psum(1, DATA_AXIS)
    local_tokens = batch['targets'].size
    total_tokens = local_tokens * num_devices
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    local_batch = batch['targets'].shape[0]
    rows_B = lax.axis_index(DATA_AXIS) * local_batch + jnp.arange(local_batch)
    batch = {**batch, 'dropout_keys': jax.vmap(jax.random.fold_in, (None, 0))(step_key, rows_B)}

    def micro_loss(params, micro_batch):
      model = nnx.merge(parts.graphdef, params, consts)
      # The head in chunks of rows where its logits are large (factorized/model/loss.py).
      nll_sum = loss_lib.model_nll_sum(model, micro_batch['inputs'], micro_batch['targets'],
                                       micro_batch['dropout_keys'])
      penalty = model.penalty()
      # psum over devices and the sum over micro-batches restore the global objective.
      loss = nll_sum / total_tokens + penalty / (num_devices * grad_accum_steps)
      return loss, (nll_sum, penalty)

    # Differentiate with respect to a per-device (varying) view of the replicated params:
    # then each device's gradient is its own, and the one explicit psum below is the only
    # reduction (w.r.t. replicated params, shard_map would already psum the cotangent).
    local_params = lax.pcast(state.params, DATA_AXIS, to='varying')
    grad_fn = jax.grad(micro_loss, has_aux=True)
    if grad_accum_steps == 1:
      grads, (nll_sum, penalty) = grad_fn(local_params, batch)
    else:
      micro_batches = jax.tree.map(
          lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]), batch)

      def accumulate(carry, micro_batch):
        grads_sum, nll_total = carry
        grads, (nll_sum, penalty) = grad_fn(local_params, micro_batch)
        return (jax.tree.map(jnp.add, grads_sum, grads), nll_total + nll_sum), penalty

      # The carry holds per-device (varying) values: mark the zeros as such for shard_map.
      zeros = lax.pcast(
          (jax.tree.map(jnp.zeros_like, state.params), jnp.zeros((), jnp.float32)),
          DATA_AXIS, to='varying')
      (grads, nll_sum), penalties = lax.scan(accumulate, zeros, micro_batches)
      penalty = penalties[0]

    # Summed a slice of rows at a time in place (factorized/train/inplace.py): one copy of the
    # table's gradient, not two.
    grads = jax.tree.map(
        lambda g: inplace.update_rows(functools.partial(lax.psum, axis_name=DATA_AXIS), g), grads)
    loss = lax.psum(nll_sum, DATA_AXIS) / total_tokens
    # The same value on every device, but computed from the varying view of the params.
    penalty = lax.pmean(penalty, DATA_AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        'loss': loss,
        'penalty': penalty,
        'grad_norm': optax.tree.norm(grads),
        'lr': schedule(state.step),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  # check_vma=False: the sliced psum writes device-summed slices back into the per-device
  # gradient, which JAX's varying/invariant typing cannot express (nothing converts a
  # varying value to an invariant one). The gradient is per-device by the pcast above
  # either way, and tests/test_trainer.py checks that device counts agree bitwise.
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)),
                          out_specs=(P(), P()), check_vma=False)

  return BoundStep(jax.jit(sharded, donate_argnums=0), parts.consts)


def make_eval_step(parts: ModelParts, mesh: Mesh, groups: dict[str, int] | None = None
                   ) -> Callable[[nnx.State, dict, jax.Array, jax.Array], jax.Array]:
  """Returns the jitted `(params, batch, sums_NxDxKxM, index) -> sums_NxDxKxM` (sums
  donated; `eval_sums` makes them, `total_eval_sums` adds them up).

  Row `index` of each device's column of `sums_NxDxKxM` receives that device's sums of this
  batch: K = 1 + the groups' sizes, first over every target, then, for each grouping of the
  vocabulary in `groups` ({'bands': 5, 'classes': 6}: name -> number of groups), over the
  targets of each of its groups (`batch[name]`, the group of each target, 0..size-1), in the
  order of `groups`; M = every registered metric's
  values (factorized/metrics/, `metrics()` order, nll first), then the token count.
  `batch['mask']` is 1 for real targets and 0 for padding. The step has no collective: the
  host adds the devices' sums up once, at the end, in float64. (The batches' programs
  depend on one another only through the sums they write, so XLA:CPU runs their forward
  passes concurrently; a psum in each would block one of its worker threads per device and
  batch in the psum's rendezvous, and on a busy host with few cores those waits starved the
  pool until the collective timed out and aborted the process.)
  """
  registered = metrics_lib.metrics()

  def per_device(params: nnx.State, consts: nnx.State, batch: dict, sums_NxDxKxM, index):
    model = nnx.merge(parts.graphdef, params, consts)
    mask = batch['mask'].astype(jnp.float32)
    stats = loss_lib.model_token_stats(model, batch['inputs'], batch['targets'])
    columns = [metric.per_token(stats) * mask for metric in registered] + [mask]
    sums_KxM = jnp.stack([column.sum() for column in columns])[None]
    for name, size in (groups or {}).items():
      in_group_BxLxK = jax.nn.one_hot(batch[name], size, dtype=jnp.float32)
      group_sums_KxM = jnp.stack([jnp.einsum('bl,blk->k', column, in_group_BxLxK)
                                  for column in columns], axis=1)
      sums_KxM = jnp.concatenate([sums_KxM, group_sums_KxM])
    return lax.dynamic_update_slice(sums_NxDxKxM, sums_KxM[None, None], (index, 0, 0, 0))

  sharded = jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS), P(None, DATA_AXIS), P()),
      out_specs=P(None, DATA_AXIS))
  return BoundStep(jax.jit(sharded, donate_argnums=3), parts.consts)


def eval_sums(num_batches: int, num_groups: int, mesh: Mesh) -> jax.Array:
  """Zeros for make_eval_step's sums: num_batches x devices x (1 + num_groups) x (metrics +
  1), float32, each device holding its own column (num_groups: the groups' sizes added)."""
  shape = (num_batches, mesh.devices.size, 1 + num_groups, len(metrics_lib.metrics()) + 1)
  sharding = NamedSharding(mesh, P(None, DATA_AXIS))
  return jax.make_array_from_callback(shape, sharding,
                                      lambda index: np.zeros(shape, np.float32)[index])


def total_eval_sums(sums_NxDxKxM: jax.Array) -> np.ndarray:
  """The sums over batches and devices, K x M in float64 (gathered from every process)."""
  if jax.process_count() > 1:
    sums_NxDxKxM = multihost_utils.process_allgather(sums_NxDxKxM, tiled=True)
  sums_NxDxKxM = np.asarray(jax.device_get(sums_NxDxKxM), np.float64)
  return sums_NxDxKxM.sum(axis=1).sum(axis=0)
