"""Orbax checkpoints of a run: the train state and the run's JSON progress, atomically.

One CheckpointManager under workdir/checkpoints keeps the last `keep` checkpoints and
the best one by valid perplexity, written asynchronously. Orbax writes each step into a
temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoints intact (the partial directory is cleaned up on the next start).

A checkpoint holds, under 'state': params (named, as a pure dict), optimizer state
(its leaves in tree order), step and base RNG key data; under 'extra': JSON with the
data iterator position and the run's progress.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from factorized.train.step import TrainState

log = logging.getLogger(__name__)
CHECKPOINT_DIR = 'checkpoints'
_METRIC = 'valid_ppl'


def _to_tree(state: TrainState) -> dict:
  return {
      'step': state.step,
      'params': nnx.to_pure_dict(state.params),
      'opt_state': jax.tree.leaves(state.opt_state),
      'rng': state.rng,
  }


def _from_tree(tree: dict, template: TrainState) -> TrainState:
  params = jax.tree.map(lambda x: x, template.params)  # a copy to fill in
  nnx.replace_by_pure_dict(params, tree['params'])
  opt_state = jax.tree.unflatten(jax.tree.structure(template.opt_state), tree['opt_state'])
  return TrainState(step=tree['step'], params=params, opt_state=opt_state, rng=tree['rng'])


def _abstract(tree: dict) -> dict:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Saves and restores TrainStates (plus JSON extras) in `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    metric = lambda metrics: metrics[_METRIC]
    options = ocp.CheckpointManagerOptions(
        preservation_policy=AnyPreservationPolicy([
            LatestN(n=keep),
            BestN(get_metric_fn=metric, reverse=True, n=1,
                  keep_checkpoints_without_metrics=False),
        ]),
        best_fn=metric,
        best_mode='min',
        enable_async_checkpointing=True,
        cleanup_tmp_directories=not read_only,
        read_only=read_only,
        create=not read_only,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'extra'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the lowest valid perplexity among the kept checkpoints."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: TrainState, extra: dict, *,
           valid_ppl: float | None = None) -> None:
    """Starts an asynchronous save of `state` and `extra` (JSON) at `step`."""
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(_to_tree(state)),
                                extra=ocp.args.JsonSave(extra)),
        metrics=None if valid_ppl is None else {_METRIC: float(valid_ppl)},
        force=True)

  def restore(self, template: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
    """Restores `step` (default: the latest readable one) into `template`'s structure.

    Without an explicit step, an unreadable latest checkpoint is reported and the previous
    one is tried, down to the oldest; with one, its error is raised as it is.
    """
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(
          f'No checkpoint in {self.directory}: train first (train.py --workdir=...).')
    if step is not None and step not in steps:
      raise FileNotFoundError(
          f'No checkpoint of step {step} in {self.directory}; available: {steps}.')
    candidates = [step] if step is not None else steps[::-1]
    abstract = _abstract(_to_tree(template))
    errors = []
    for candidate in candidates:
      try:
        restored = self._manager.restore(
            candidate, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                               extra=ocp.args.JsonRestore()))
      except Exception as error:  # orbax raises many types for unreadable files
        if step is not None:
          raise
        errors.append(f'step {candidate}: {type(error).__name__}: {str(error)[:200]}')
        log.warning('Checkpoint of step %d in %s is unreadable (%s); trying the previous one.',
                    candidate, self.directory, errors[-1])
        continue
      if errors:
        log.warning('Restored step %d after skipping unreadable checkpoints.', candidate)
      return _from_tree(restored['state'], template), dict(restored['extra'])
    raise RuntimeError(f'No readable checkpoint in {self.directory}:\n  ' + '\n  '.join(errors))

  def wait(self) -> None:
    """Blocks until every pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
