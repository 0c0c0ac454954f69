r"""How a sweep's points run: submitit jobs, on this machine or on a SLURM cluster.

Every point is one submitit job, `TrainPoint`, that trains the config the sweep saved in the
point's workdir, so a point computes the same thing under either launcher (two classes of
one interface, `Launcher`: submit, poll, stop):

  local  `LocalLauncher`, `submitit.LocalExecutor`: one process per point on this machine;
         the sweep keeps `workers` of them running (no time limit).
  slurm  `SlurmLauncher`, `submitit.SlurmExecutor`: one job array of the points to run, at
         most `workers` tasks running at once, each with the resources of the config's
         `launcher` section (configs/common.py: partition, account, qos, time_min, cpus/GPUs
         per task, mem, sbatch_extra).

A job's output goes to its point's train.log; submitit's own files (pickled jobs, sbatch
scripts, its logs) to `<sweep dir>/.submitit/`, and the array's job ids to
`<sweep dir>/.submitit/jobs.json`, so a sweep started again waits for its points that are
still queued or running instead of submitting them twice.

Stop signals. The trainer checkpoints at its next step on SIGTERM, SIGINT or SIGUSR2 and
raises `TrainingInterrupted`; the job then decides:
- on SLURM, after SIGTERM (preemption, `scancel --signal=TERM`) or USR2 (submitit asks
  SLURM for it `launcher.signal_delay_s` before the time limit), it hands the signal back to
  submitit, whose checkpointing hook (`Checkpointable.checkpoint`) requeues the job; the
  requeued job resumes from the checkpoint and ends with the uninterrupted result;
- on this machine, SIGTERM and SIGINT (the sweep was stopped) end it as interrupted.
The job listens for them from its first line (`StopRequest`), so a stop while it is still
starting (importing JAX, reading the corpus, compiling) ends it at its first step.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any

import submitit
from absl import logging

from factorized import files
from factorized.config import build, cli
from factorized.spec import Spec
from factorized.train.stopping import StopRequest

LAUNCHERS = ('local', 'slurm')
LOG_FILE = 'train.log'
SUBMITIT_DIR = '.submitit'
JOBS_FILE = 'jobs.json'
EXIT_INTERRUPTED = 143  # what train.py and a point's job return after a stop signal
_LOCAL_TIME_LIMIT_MIN = 60 * 24 * 365  # no time limit on this machine
_PREEMPT_SIGNAL = getattr(signal, 'SIG' + submitit.JobEnvironment.USR_SIG)


class TrainPoint(submitit.helpers.Checkpointable):
  """The job of one sweep point: trains (or resumes) the config saved in its workdir.

  Being `Checkpointable`, it is requeued with the same arguments when submitit's signal
  handler runs; the trainer's own checkpoint makes the requeued job resume, not restart.
  """

  def __init__(self, verbosity: int | None = None):
    self.verbosity = verbosity  # the sweep's --verbosity; None: no dependency noise

  def __call__(self, workdir: str) -> dict:
    with StopRequest() as stop:  # first: a stop while the job starts is not lost
      _send_output_to(pathlib.Path(workdir) / LOG_FILE)
      logging.use_absl_handler()
      cli.quiet_libraries(self.verbosity)
      import jax  # not in the sweep's own process: it never needs an accelerator

      from factorized.train import trainer

      config = build.load_saved(workdir)
      logging.info('JAX devices: %s', jax.devices())
      try:
        return trainer.train_and_evaluate(config, workdir, stop=stop)
      except trainer.TrainingInterrupted as interrupted:
        stopped = interrupted
    # Out of the StopRequest, submitit's own handlers are back for the requeue.
    print(f'{stopped}', flush=True)
    on_slurm = submitit.JobEnvironment().cluster == 'slurm'
    if stopped.signal_name == 'SIGUSR2' or (on_slurm and stopped.signal_name == 'SIGTERM'):
      _requeue_through_submitit()
    sys.exit(EXIT_INTERRUPTED)


def _send_output_to(log_path: pathlib.Path) -> None:
  """Appends this process's stdout and stderr (Python's and native code's) to `log_path`."""
  log_path.parent.mkdir(parents=True, exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)
  job = os.environ.get('SLURM_JOB_ID') or os.environ.get('SUBMITIT_LOCAL_JOB_ID', '')
  print(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} sweep point {log_path.parent.name}, '
        f'job {job}', flush=True)


def _requeue_through_submitit() -> None:
  """Raises submitit's preemption signal again, now that the trainer has restored
  submitit's handler: it calls `checkpoint()`, requeues the job and exits. If SLURM
  refuses the requeue (it is already requeueing a preempted job), the job just ends."""
  try:
    signal.raise_signal(_PREEMPT_SIGNAL)
  except Exception as error:  # noqa: BLE001 (any failure of scontrol: exit as interrupted)
    print(f'requeue through submitit failed ({error}); exiting as interrupted', flush=True)


@dataclasses.dataclass
class Job:
  """A submitted point: its name, workdir and submitit job, and where its log started."""

  name: str
  workdir: pathlib.Path
  job: Any
  log_start: int
  start: float = dataclasses.field(default_factory=time.time)
  gone_since: float | None = None  # slurm: first poll that found it neither queued nor done


@dataclasses.dataclass
class Outcome:
  """How a job ended: 'done' (with its summary) or 'failed' (with why)."""

  status: str
  summary: dict | None = None
  reason: str = ''


def slurm_parameters(launcher: Spec) -> dict[str, Any]:
  """submitit's SlurmExecutor parameters from the `launcher` section, each field checked."""
  def positive_int(field: str, minimum: int = 1) -> int:
    value = launcher[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
      raise ValueError(f'launcher.{field}={value!r} must be an integer >= {minimum}.')
    return value

  params = {'time': positive_int('time_min'), 'cpus_per_task': positive_int('cpus_per_task'),
            'signal_delay_s': positive_int('signal_delay_s', 0)}
  positive_int('max_timeouts', 0)
  if positive_int('gpus_per_task', 0):
    params['gpus_per_task'] = launcher.gpus_per_task
  if launcher.mem:
    if not re.fullmatch(r'\d+[KMGT]?', str(launcher.mem)):
      raise ValueError(f'launcher.mem={launcher.mem!r}: expected a size such as 16G or 4000M '
                       "('' for the partition's default).")
    params['mem'] = launcher.mem
  for field in ('partition', 'account', 'qos'):
    if launcher[field]:
      params[field] = launcher[field]
  extra = {}
  for item in filter(None, (part.strip() for part in str(launcher.sbatch_extra).split(','))):
    key, sep, value = item.partition('=')
    if not re.fullmatch(r'[a-z][a-z0-9-]*', key):
      raise ValueError(f'launcher.sbatch_extra={launcher.sbatch_extra!r}: {item!r} is not '
                       "an sbatch option; expected 'option=value' or 'option', comma-separated.")
    extra[key] = value if sep else True
  if extra:
    params['additional_parameters'] = extra
  return params


# Words in sbatch's refusal that point at the launcher field to fix.
_REFUSAL_FIELDS = (('partition', 'partition'), ('account', 'account'), ('qos', 'qos'),
                   ('time limit', 'time_min'), ('memory', 'mem'), ('gres', 'gpus_per_task'),
                   ('gpu', 'gpus_per_task'), ('cpu', 'cpus_per_task'),
                   ('unrecognized option', 'sbatch_extra'), ('invalid option', 'sbatch_extra'))


def _refusal(error: Exception, launcher: Spec) -> ValueError:
  """A ValueError naming the launcher field that sbatch's refusal (its stderr) is about."""
  text = str(error).strip() or repr(error)
  lowered = text.lower()
  fields = [field for word, field in _REFUSAL_FIELDS if word in lowered][:1] or [
      'partition', 'account', 'qos', 'time_min', 'cpus_per_task', 'gpus_per_task', 'mem',
      'sbatch_extra']
  settings = ', '.join(f'launcher.{field}={launcher[field]!r}' for field in fields)
  return ValueError(f'SLURM refused the sweep\'s jobs ({text.splitlines()[-1]}): check '
                    f'{settings} (override with --config.launcher.<field>=...).')


class Launcher:
  """Submits a sweep's points as submitit jobs and tells when each has ended.

  `LocalLauncher` and `SlurmLauncher` differ in how jobs are submitted, polled and stopped,
  how many may be submitted at once (`room`), and whether the sweep waits for its jobs after
  a stop (`waits_after_stop`); `make_launcher` picks one by name.
  """

  poll_s = 0.5  # how often the sweep polls its jobs
  waits_after_stop = True  # after a stop, the sweep waits for its jobs to end

  def __init__(self, sweep_dir: str | os.PathLike, *, workers: int,
               verbosity: int | None = None):
    if workers < 1:
      raise ValueError(f'--sweep_workers={workers} must be >= 1.')
    self.workers = workers
    self.root = pathlib.Path(sweep_dir)
    self.folder = self.root / SUBMITIT_DIR
    self.job_fn = TrainPoint(verbosity)

  def submit(self, points: dict[str, pathlib.Path]) -> list[Job]:
    """Submits these points (name -> workdir)."""
    starts = {name: _size(workdir / LOG_FILE) for name, workdir in points.items()}
    jobs = self._submit([str(workdir) for workdir in points.values()])
    return [Job(name, points[name], job, starts[name])
            for name, job in zip(points, jobs, strict=True)]

  def _submit(self, workdirs: list[str]) -> list[submitit.Job]:
    raise NotImplementedError

  def room(self, running: int) -> int:
    """How many more points to submit while `running` of them run."""
    raise NotImplementedError

  def queued_earlier(self, points: dict[str, pathlib.Path]) -> list[Job]:
    """The jobs an earlier run of this sweep submitted that still run (to wait for, not
    submit again)."""
    del points
    return []

  def poll(self, jobs: list[Job]) -> dict[str, Outcome]:
    """The jobs among `jobs` that have ended since they were submitted, by name."""
    raise NotImplementedError

  def stop(self, jobs: list[Job]) -> str:
    """Stops the sweep's running `jobs`; what the user can do next."""
    raise NotImplementedError


class LocalLauncher(Launcher):
  """One process per point on this machine (`submitit.LocalExecutor`, no time limit), the
  sweep keeping `workers` of them running."""

  def __init__(self, sweep_dir: str | os.PathLike, *, workers: int,
               verbosity: int | None = None):
    super().__init__(sweep_dir, workers=workers, verbosity=verbosity)
    self.executor = submitit.LocalExecutor(folder=self.folder / '%j')
    self.executor.update_parameters(timeout_min=_LOCAL_TIME_LIMIT_MIN)
    _set_job_environment(local_jobs=workers)

  def _submit(self, workdirs: list[str]) -> list[submitit.Job]:
    # Ctrl-C reaches the whole terminal's process group: the job's controller must not die
    # of it (it would kill the job before its checkpoint); the job stops by itself. The
    # controller inherits the ignored SIGINT.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
      return [self.executor.submit(self.job_fn, workdir) for workdir in workdirs]
    finally:
      signal.signal(signal.SIGINT, previous)

  def room(self, running: int) -> int:
    return self.workers - running

  def poll(self, jobs: list[Job]) -> dict[str, Outcome]:
    return {job.name: _local_outcome(job) for job in jobs if job.job.done()}

  def stop(self, jobs: list[Job]) -> str:
    """SIGTERM to each running job's controller, which passes it to the job: the job
    checkpoints and exits. (submitit's `cancel()` sends SIGINT, which the controller
    ignores; a local job's id is its controller's process id.)"""
    for job in jobs:
      if not job.job.done():
        os.kill(int(job.job.job_id), signal.SIGTERM)
    return 'Run the same command again to resume.'


def _local_outcome(job: Job) -> Outcome:
  """An ended local job: its result, or, without one (stopped, killed, out of memory), the
  end of its log."""
  if job.job.paths.result_pickle.exists():
    return _result_outcome(job)
  return Outcome('failed', reason=f'ended without a result (submitit: {job.job.state})\n'
                 f'{_log_tail(job)}')


class SlurmLauncher(Launcher):
  """One job array of the points to run (`submitit.SlurmExecutor`), at most `workers` tasks
  running at once, each with the resources of the config's `launcher` section."""

  poll_s = 5.0
  waits_after_stop = False  # the jobs keep running on the cluster

  def __init__(self, sweep_dir: str | os.PathLike, launcher_config: Spec | None, *,
               workers: int, verbosity: int | None = None):
    if launcher_config is None:
      raise ValueError('--sweep_launcher=slurm: the config has no `launcher` section (SLURM '
                       'resources); add `config.launcher = common.launcher()` from '
                       'configs/common.py to the config file.')
    super().__init__(sweep_dir, workers=workers, verbosity=verbosity)
    self.config = launcher_config
    params = slurm_parameters(launcher_config)  # checked before anything is submitted
    if not _has_command('sbatch'):
      raise ValueError('--sweep_launcher=slurm: sbatch is not on PATH (no SLURM client on '
                       'this machine); use --sweep_launcher=local or run on a login node.')
    self.executor = submitit.SlurmExecutor(folder=self.folder / '%j',
                                           max_num_timeout=launcher_config.max_timeouts)
    self.executor.update_parameters(
        job_name=f'factorized-{self.root.resolve().name}', array_parallelism=workers,
        stderr_to_stdout=True, **params)
    _set_job_environment(local_jobs=1)

  def submit(self, points: dict[str, pathlib.Path]) -> list[Job]:
    """Submits these points as one array and records their job ids (jobs.json)."""
    submitted = super().submit(points)
    path = self.folder / JOBS_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update({job.name: job.job.job_id for job in submitted})
    files.write_json_atomic(path, record)
    return submitted

  def _submit(self, workdirs: list[str]) -> list[submitit.Job]:
    try:
      with self.executor.batch():
        return [self.executor.submit(self.job_fn, workdir) for workdir in workdirs]
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as error:
      raise _refusal(error, self.config) from None

  def room(self, running: int) -> int:
    del running
    return sys.maxsize  # all at once: the array runs `workers` of them at a time

  def queued_earlier(self, points: dict[str, pathlib.Path]) -> list[Job]:
    path = self.folder / JOBS_FILE
    if not path.exists():
      return []
    record = json.loads(path.read_text())
    alive = _slurm_queue()
    return [Job(name, workdir, submitit.SlurmJob(self.folder / '%j', record[name]),
                _size(workdir / LOG_FILE))
            for name, workdir in points.items() if record.get(name) in alive]

  def poll(self, jobs: list[Job]) -> dict[str, Outcome]:
    queue, ended = _slurm_queue(), {}
    for job in jobs:
      if job.job.paths.result_pickle.exists():
        ended[job.name] = _result_outcome(job)
      elif job.job.job_id in queue:
        job.gone_since = None
      elif job.gone_since is None:
        job.gone_since = time.time()  # give its result file a moment to appear
      elif time.time() - job.gone_since > 10:
        ended[job.name] = Outcome('failed', reason='left the SLURM queue without a result '
                                  f'(cancelled, killed or out of memory?)\n{_log_tail(job)}')
    return ended

  def stop(self, jobs: list[Job]) -> str:
    """Leaves the jobs running on the cluster."""
    del jobs
    return ('The SLURM jobs keep running (squeue --me). Run the same command again to wait '
            'for them, or add --sweep_report_only for the reports of what has finished.')


def make_launcher(kind: str, sweep_dir: str | os.PathLike, launcher_config: Spec | None, *,
                  workers: int, verbosity: int | None = None) -> Launcher:
  """The launcher `kind` ('local' or 'slurm'); `launcher_config`: the config's `launcher`
  section (None when it has none: only the local launcher runs without)."""
  if kind == 'local':
    return LocalLauncher(sweep_dir, workers=workers, verbosity=verbosity)
  if kind == 'slurm':
    return SlurmLauncher(sweep_dir, launcher_config, workers=workers, verbosity=verbosity)
  raise ValueError(f'--sweep_launcher={kind!r} must be one of {", ".join(LAUNCHERS)}.')


def _result_outcome(job: Job) -> Outcome:
  try:
    return Outcome('done', summary=job.job.result())
  except Exception as error:  # noqa: BLE001 (the job raised; submitit gives its traceback)
    # submitit's message holds the job's traceback: name its last exception.
    raised = re.findall(r'\b(\w*(?:Error|Exception|Interrupted|Loss): [^\n]*)', str(error))
    what = raised[-1].strip().rstrip('"\'') if raised else type(error).__name__
    return Outcome('failed', reason=f'{what}; the end of {job.workdir / LOG_FILE}:\n'
                   f'{_log_tail(job)}')


def _slurm_queue() -> set[str]:
  """Ids of this user's queued or running SLURM jobs, array tasks one by one (`123_4`)."""
  out = subprocess.run(['squeue', '--noheader', '--array', '--format=%i',
                        f'--user={getpass.getuser()}'],
                       capture_output=True, text=True, timeout=60, check=True).stdout
  return set(out.split())


def _has_command(name: str) -> bool:
  import shutil

  return shutil.which(name) is not None


def _set_job_environment(local_jobs: int) -> None:
  """What every job inherits: `factorized` importable, tqdm redrawing a log file sparingly,
  and, with several jobs on one accelerator, no job grabbing most of its memory."""
  root = str(pathlib.Path(__file__).resolve().parents[2])
  paths = os.environ.get('PYTHONPATH', '').split(os.pathsep)
  if root not in paths:
    os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (root, *paths) if p)
  os.environ.setdefault('TQDM_MININTERVAL', '5')
  if local_jobs > 1:
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


def _size(path: pathlib.Path) -> int:
  return path.stat().st_size if path.exists() else 0


_LOG_TAIL_LINES = 15


def _log_tail(job: Job) -> str:
  """The last lines this job wrote to its train.log (progress-bar redraws collapsed)."""
  path = job.workdir / LOG_FILE
  if not path.exists():
    return f'      ({path} was not written: see {job.job.paths.stdout})'
  with open(path, 'rb') as f:
    f.seek(job.log_start)
    text = f.read().decode('utf-8', 'replace')
  lines = [line.rsplit('\r', 1)[-1].rstrip() for line in text.split('\n')]
  return '\n'.join(f'      {line}' for line in [line for line in lines if line][-_LOG_TAIL_LINES:])
