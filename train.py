r"""Trains a language model with a dense, ALBERT or SVD token embedding.

  python train.py --config=configs/brown.py:kind=svd,rank=64 --workdir=runs/svd64

Every config field can be overridden (--config.train.lr=1e-3). Running again on the
same workdir resumes from its latest checkpoint; SIGTERM or Ctrl-C writes a checkpoint
first (and on SIGUSR2, which SLURM sends before a time limit with --signal=USR2@120).
Several hosts: start one process per host with --distributed; under SLURM (srun) and on
Cloud TPU, jax.distributed.initialize() reads the cluster from the environment, elsewhere
add --coordinator_address, --num_processes and --process_id.

A config file that defines get_sweep() runs a sweep instead (factorized/sweeps/sweep.py): every
point in its own sub-workdir of --workdir, as submitit jobs on this machine
(--sweep_launcher=local, --sweep_workers at a time) or as one SLURM job array
(--sweep_launcher=slurm, resources from the config's `launcher` section), finished points
skipped and unfinished ones resumed, then summary.csv/.md, the plots and a `sweep`
TensorBoard run in --workdir:

  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep [--sweep_workers=2]
  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep --sweep_launcher=slurm \
      --sweep_workers=16 --config.launcher.partition=gpu --config.launcher.gpus_per_task=1
  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep --sweep_report_only
"""

import json
import sys

from absl import app, flags, logging

from factorized.config import cli
from factorized.runtime.allocator import ensure_fast_malloc

cli.define_config_flag()
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, events and summary.json.')
flags.DEFINE_bool('distributed', False, 'Join a multi-process run via jax.distributed.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
flags.DEFINE_integer('process_id', None, 'This process index (multi-process).')
flags.DEFINE_enum('sweep_launcher', 'local', ['local', 'slurm'],
                  'Sweep configs (with get_sweep()): where the points run, as submitit jobs: '
                  'this machine, or one SLURM job array (config section `launcher`).')
flags.DEFINE_integer('sweep_workers', 1, 'Sweep configs: points running at once (local: '
                     'processes on this machine; slurm: the job array\'s limit).')
flags.DEFINE_float('sweep_progress_every_s', 60, 'Sweep configs, when the output is not a '
                   'terminal (nohup, CI): print a progress line every this many seconds.')
flags.DEFINE_bool('sweep_report_only', False, 'Sweep configs: write the reports from the '
                  'points finished so far, and run nothing.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_libraries()  # no dependency warnings unless --verbosity is given
  cli.check_workdir(FLAGS.workdir)
  missing = cli.missing_config_file(FLAGS['config'].config_filename)
  if missing:
    cli.usage_error(missing)
  from factorized.config import build
  from factorized.sweeps import sweep

  points = sweep.load_sweep(cli.config_module(), FLAGS['config'].config_filename)
  try:
    config = build.from_config(FLAGS.config)  # the one Spec of this start
  except ValueError as error:
    cli.usage_error(str(error))
  if points is not None:
    if FLAGS.distributed:
      raise app.UsageError('A sweep runs each point as its own single-process run; '
                           'drop --distributed.')
    try:
      points = sweep.make_points(config, points,
                                 overridden=FLAGS['config'].override_values)
      if FLAGS.sweep_report_only:
        sweep.write_reports(FLAGS.workdir)
        return
      sys.exit(sweep.run_sweep(points, FLAGS.workdir, launcher=FLAGS.sweep_launcher,
                               workers=FLAGS.sweep_workers,
                               verbosity=(FLAGS.verbosity if FLAGS['verbosity'].present
                                          else None),
                               progress_every_s=FLAGS.sweep_progress_every_s))
    except (ValueError, FileNotFoundError) as error:
      cli.usage_error(str(error))
  import jax

  if FLAGS.distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  from factorized.train import trainer

  logging.info('JAX devices: %s', jax.devices())
  try:
    summary = trainer.train_and_evaluate(config, FLAGS.workdir)
  except trainer.TrainingInterrupted as stopped:
    logging.warning('%s', stopped)
    sys.exit(143)
  except trainer.NonFiniteLoss as error:
    sys.exit(f'error: {error}')
  except (ValueError, FileNotFoundError) as error:  # a config field, a file: named, exit 2
    cli.usage_error(str(error))
  if jax.process_index() == 0:
    keys = ('valid_ppl', 'best_valid_ppl', 'test_ppl', 'steps', 'tokens_per_s')
    print(json.dumps({key: summary[key] for key in keys}))


if __name__ == '__main__':
  ensure_fast_malloc()  # re-execs once with a faster malloc; FACTORIZED_FAST_MALLOC=0: off
  app.run(main, flags_parser=cli.parse_flags)
