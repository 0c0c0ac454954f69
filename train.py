r"""Trains a language model with a dense, ALBERT or SVD token embedding.

  python train.py --config=configs/brown.py:kind=svd,rank=64 --workdir=runs/svd64

Every config field can be overridden (--config.train.lr=1e-3). Running again on the
same workdir resumes from its latest checkpoint; SIGTERM or Ctrl-C writes a checkpoint
first. Several hosts: start one process per host with --coordinator_address,
--num_processes and --process_id (or none of them where jax.distributed.initialize()
detects the cluster itself, e.g. on Cloud TPU), plus --distributed.

A config file that defines get_sweep() runs a sweep instead (factorized/sweep.py): every
point in its own sub-workdir of --workdir, --sweep_workers at a time, finished points
skipped and unfinished ones resumed, then summary.csv/.md, ppl_vs_rank.png and a `sweep`
TensorBoard run in --workdir:

  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep [--sweep_workers=2]
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from factorized.allocator import ensure_fast_malloc

config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with an argument: configs/brown.py:kind=svd,rank=64',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, events and summary.json.')
flags.DEFINE_bool('distributed', False, 'Join a multi-process run via jax.distributed.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
flags.DEFINE_integer('process_id', None, 'This process index (multi-process).')
flags.DEFINE_integer('sweep_workers', 1, 'Sweep configs (with get_sweep()): points trained '
                     'in parallel, each in its own process.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  from factorized import sweep

  points = sweep.load_sweep(FLAGS['config'].config_filename)
  if points is not None:
    if FLAGS.distributed:
      raise app.UsageError('A sweep runs each point as its own single-process run; '
                           'drop --distributed.')
    try:
      points = sweep.make_points(FLAGS.config, points,
                                 overridden=FLAGS['config'].override_values)
      sys.exit(sweep.run_sweep(points, FLAGS.workdir, workers=FLAGS.sweep_workers))
    except ValueError as error:
      sys.exit(f'error: {error}')
  import jax

  if FLAGS.distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  from factorized import trainer

  logging.info('JAX devices: %s', jax.devices())
  try:
    summary = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except trainer.TrainingInterrupted as stopped:
    logging.warning('%s', stopped)
    sys.exit(143)
  except (ValueError, FileNotFoundError, trainer.NonFiniteLoss) as error:
    sys.exit(f'error: {error}')
  if jax.process_index() == 0:
    keys = ('valid_ppl', 'best_valid_ppl', 'test_ppl', 'steps', 'tokens_per_s')
    print(json.dumps({key: summary[key] for key in keys}))


if __name__ == '__main__':
  ensure_fast_malloc()  # re-execs once with a faster malloc; FACTORIZED_FAST_MALLOC=0: off
  app.run(main)
