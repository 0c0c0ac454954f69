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
import optax
from flax import nnx
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from factorized import loss as loss_lib
from factorized import rows
from factorized.parallel import DATA_AXIS


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
      # The head in chunks of rows where its logits are large (factorized/loss.py).
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

    # Summed a slice of rows at a time in place (factorized/rows.py): one copy of the
    # table's gradient, not two.
    grads = jax.tree.map(
        lambda g: rows.update_rows(functools.partial(lax.psum, axis_name=DATA_AXIS), g), grads)
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


def make_eval_step(parts: ModelParts, mesh: Mesh, num_bands: int = 0
                   ) -> Callable[[nnx.State, dict, jax.Array, jax.Array], jax.Array]:
  """Returns the jitted `(params, batch, sums_NxKx2, index) -> sums_NxKx2` (sums donated).

  Row `index` of `sums_NxKx2` receives this batch's [nll_sum, token_count] pairs, summed
  over devices: K = 1 + num_bands, first over every target, then over the targets of each
  band (`batch['bands']`, the band of each target, 0..num_bands-1). `batch['mask']` is 1
  for real targets and 0 for padding. Threading one results array through every batch
  chains the executions: they run one after another without a host sync per batch.
  (Independent dispatches would run concurrently, and on a host with few cores the
  collectives of many concurrent programs can starve each other of threads.)
  """

  def per_device(params: nnx.State, consts: nnx.State, batch: dict):
    model = nnx.merge(parts.graphdef, params, consts)
    mask = batch['mask'].astype(jnp.float32)
    nll = loss_lib.model_token_nll(model, batch['inputs'], batch['targets']) * mask
    sums_Kx2 = jnp.stack([nll.sum(), mask.sum()])[None]
    if num_bands:
      in_band_BxLxK = jax.nn.one_hot(batch['bands'], num_bands, dtype=jnp.float32)
      band_sums_Kx2 = jnp.stack([jnp.einsum('bl,blk->k', nll, in_band_BxLxK),
                                 jnp.einsum('bl,blk->k', mask, in_band_BxLxK)], axis=1)
      sums_Kx2 = jnp.concatenate([sums_Kx2, band_sums_Kx2])
    return lax.psum(sums_Kx2, DATA_AXIS)

  sharded = jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=P())

  def step(params, consts, batch, sums_NxKx2, index):
    return lax.dynamic_update_slice(sums_NxKx2, sharded(params, consts, batch)[None],
                                    (index, 0, 0))

  return BoundStep(jax.jit(step, donate_argnums=3), parts.consts)
