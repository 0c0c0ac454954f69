"""Evaluation of a saved run: rebuild model and tokenizer from its workdir, restore, score."""

from __future__ import annotations

import os

import jax
from flax import nnx
from jax.sharding import Mesh

from factorized import files
from factorized.config import build
from factorized.data import pipeline as data_lib
from factorized.runtime import compile_cache, parallel
from factorized.spec import Spec
from factorized.train import checkpointing, trainer

EVAL_FILE = 'eval_{split}.json'


def _checkpoint_step(checkpointer: checkpointing.Checkpointer, checkpoint: str,
                     workdir: str) -> int | None:
  """The step that `checkpoint` (latest | best | a step number) names; None = latest."""
  if not checkpointer.all_steps():
    raise FileNotFoundError(
        f'No checkpoint in {checkpointer.directory}: train first '
        f'(python train.py --workdir={workdir} ...).')
  if checkpoint == 'latest':
    return None
  if checkpoint == 'best':
    step = checkpointer.best_step()
    if step is None:
      raise FileNotFoundError(
          f'No evaluated checkpoint in {checkpointer.directory} to call best; '
          'use --checkpoint=latest.')
    return step
  if checkpoint.isdigit():
    return int(checkpoint)
  raise ValueError(f'--checkpoint={checkpoint!r}: expected latest, best or a step number.')


def restore_run(workdir: str, checkpoint: str = 'latest', *, mesh: Mesh | None = None,
                config: Spec | None = None) -> tuple[trainer.Run, int]:
  """The run saved in `workdir` with the params of `checkpoint` (latest | best | a step);
  `config`: its saved Spec, when the caller has loaded it already.

  Returns the Run (its state restored) and the restored step.
  """
  config = build.load_saved(workdir) if config is None else config
  compile_cache.enable(config.data)
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    step = _checkpoint_step(checkpointer, checkpoint, workdir)
    run = trainer.build_run(config, workdir, mesh=mesh)
    run.state, _ = checkpointer.restore(run.state, step=step)
  finally:
    checkpointer.close()
  return run, int(run.state.step)


def restore_model(workdir: str, checkpoint: str = 'latest', *,
                  mesh: Mesh | None = None) -> tuple[nnx.Module, int]:
  """The model of `checkpoint` without the corpus: the vocabulary size and the train
  counts come from the run's train_counts.npy, so a copy of the run directory is enough
  (notebooks). Returns the NNX model and the restored step."""
  config = build.load_saved(workdir)
  counts = data_lib.load_train_counts(workdir)
  mesh = parallel.make_mesh(jax.devices()[:1]) if mesh is None else mesh
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    step = _checkpoint_step(checkpointer, checkpoint, workdir)
    parts, state = trainer.init_state(build.build_args(config, counts.size), mesh,
                                      token_counts=counts)
    state, _ = checkpointer.restore(state, step=step)
  finally:
    checkpointer.close()
  return parts.merge(state.params), int(state.step)


def evaluate_workdir(workdir: str, split: str = 'test', checkpoint: str = 'best', *,
                     stride: int | None = None, mesh: Mesh | None = None) -> dict:
  """Exact perplexity of a saved checkpoint on `split` (windows every `stride` tokens,
  default data.seq_len), with its frequency bands; writes workdir/eval_<split>.json."""
  if split not in ('valid', 'test'):
    raise ValueError(f'--split={split!r}: expected valid or test.')
  config = build.load_saved(workdir)
  data_lib.num_eval_batches(1, seq_len=config.data.seq_len, global_batch_size=1,
                            stride=stride)  # a bad --stride fails now, before the restore
  run, step = restore_run(workdir, checkpoint, mesh=mesh, config=config)
  result = run.evaluator(split, stride=stride)(run.state.params)
  result = {'split': split, 'step': step, 'checkpoint': checkpoint,
            f'{split}_ppl': result['ppl'], **result}
  if jax.process_index() == 0:
    files.write_json_atomic(os.path.join(workdir, EVAL_FILE.format(split=split)), result)
  return result
