"""Evaluation of a saved run: rebuild model and tokenizer from its workdir, restore, score."""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

from factorized import checkpointing, trainer
from factorized import data as data_lib
from factorized import workdir as workdir_lib

EVAL_FILE = 'eval_{split}.json'


def restore_run(workdir: str, checkpoint: str = 'latest', *,
                mesh: Mesh | None = None) -> tuple[trainer.Run, int]:
  """The run saved in `workdir` with the params of `checkpoint` (latest | best | a step).

  Returns the Run (its state restored) and the restored step.
  """
  config = workdir_lib.load_config(workdir)
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise FileNotFoundError(
          f'No checkpoint in {checkpointer.directory}: train first '
          f'(python train.py --workdir={workdir} ...).')
    if checkpoint == 'latest':
      step = None
    elif checkpoint == 'best':
      step = checkpointer.best_step()
      if step is None:
        raise FileNotFoundError(
            f'No evaluated checkpoint in {checkpointer.directory} to call best; '
            'use --checkpoint=latest.')
    elif checkpoint.isdigit():
      step = int(checkpoint)
    else:
      raise ValueError(f'--checkpoint={checkpoint!r}: expected latest, best or a step number.')
    run = trainer.build_run(config, workdir, mesh=mesh)
    run.state, _ = checkpointer.restore(run.state, step=step)
  finally:
    checkpointer.close()
  return run, int(run.state.step)


def evaluate_workdir(workdir: str, split: str = 'test', checkpoint: str = 'best', *,
                     stride: int | None = None, mesh: Mesh | None = None) -> dict:
  """Exact perplexity of a saved checkpoint on `split` (windows every `stride` tokens,
  default data.seq_len), with its frequency bands; writes workdir/eval_<split>.json."""
  if split not in ('valid', 'test'):
    raise ValueError(f'--split={split!r}: expected valid or test.')
  config = workdir_lib.load_config(workdir)
  data_lib.num_eval_batches(1, seq_len=config.data.seq_len, global_batch_size=1,
                            stride=stride)  # a bad --stride fails now, before the restore
  run, step = restore_run(workdir, checkpoint, mesh=mesh)
  result = run.evaluator(split, stride=stride)(run.state.params)
  result = {'split': split, 'step': step, 'checkpoint': checkpoint,
            f'{split}_ppl': result['ppl'], **result}
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, EVAL_FILE.format(split=split)), result)
  return result
