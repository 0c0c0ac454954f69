"""Config sections that every experiment config shares.

`launcher()`: how a sweep's points are sent to a SLURM cluster (`--sweep_launcher=slurm`,
factorized/sweeps/launcher.py). None of it changes what a point computes, so a finished point stays
finished when these fields change (factorized/train/workdir.py ignores them). Override any field on
the command line: --config.launcher.partition=gpu --config.launcher.time_min=120.
"""

import ml_collections


def launcher(*, gpus_per_task: int = 0, cpus_per_task: int = 2) -> ml_collections.ConfigDict:
  """The `launcher` section: SLURM resources of each sweep point (one job-array task)."""
  config = ml_collections.ConfigDict()
  config.partition = ''  # '' = the cluster's default partition
  config.account = ''  # '' = the user's default account
  config.qos = ''  # '' = the default quality of service
  # Time limit of one job in minutes. A point that needs longer is checkpointed and
  # requeued at the limit (up to `max_timeouts` times) and resumes where it stopped.
  config.time_min = 240
  config.max_timeouts = 10
  # submitit's USR2 arrives this long before the time limit: time to write a checkpoint.
  config.signal_delay_s = 120
  config.cpus_per_task = cpus_per_task
  config.gpus_per_task = gpus_per_task
  config.mem = ''  # e.g. '16G'; '' = the partition's default
  # Any other sbatch options, comma-separated: 'constraint=a100,exclusive,mail-type=END'.
  config.sbatch_extra = ''
  return config
