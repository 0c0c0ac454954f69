"""Launching on a real SLURM (.ci/local_slurm.sh brings one up on localhost; CI starts it):
a sweep's job array equals the local launcher's sweep, a preempted point is requeued and
ends with the uninterrupted result, a refused job names the launcher field, and two srun
tasks of `train.py --distributed` equal one process."""

import csv
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from configs import common
from factorized.sweeps import launcher
from tests.test_sweep import has_checkpoint, sweep_command
from tests.test_train_cli import cli_env, command


def slurm_is_up() -> bool:
  if shutil.which('sbatch') is None:
    return False
  probe = subprocess.run(['sinfo', '--noheader', '--format=%T'], capture_output=True,
                         text=True, timeout=30, check=False)
  return probe.returncode == 0 and re.search(r'idle|mixed|allocated', probe.stdout) is not None


needs_slurm = pytest.mark.skipif(
    not slurm_is_up(), reason='no SLURM cluster here (sbatch absent or no node up): start one '
    'with `bash .ci/local_slurm.sh start`')


def test_launcher_fields_are_checked_before_anything_is_submitted():
  config = common.launcher()
  assert launcher.slurm_parameters(config) == {'time': 240, 'cpus_per_task': 2,
                                               'signal_delay_s': 120}
  config.update(partition='gpu', gpus_per_task=1, mem='16G',
                sbatch_extra='constraint=a100, exclusive')
  params = launcher.slurm_parameters(config)
  assert params['partition'] == 'gpu' and params['gpus_per_task'] == 1
  assert params['mem'] == '16G'
  assert params['additional_parameters'] == {'constraint': 'a100', 'exclusive': True}
  for field, value, message in (('time_min', 0, r'launcher\.time_min=0 must be an integer'),
                                ('mem', '16 GB', r"launcher\.mem='16 GB'"),
                                ('sbatch_extra', '--foo', r'launcher\.sbatch_extra=')):
    bad = common.launcher()
    bad[field] = value
    with pytest.raises(ValueError, match=message):
      launcher.slurm_parameters(bad)


def summary_rows(sweep_dir):
  """summary.csv without the columns that measure time."""
  rows = list(csv.DictReader((sweep_dir / 'summary.csv').open()))
  timing = ('tokens_per_s', 'wall_time_s')
  return [{k: v for k, v in row.items() if not k.startswith(timing)} for row in rows]


def slurm_job_of(log_path) -> str:
  jobs = re.findall(r'sweep point \S+, job (\S+)', log_path.read_text())
  return jobs[-1] if jobs else ''


def start_when_requeued(job: str, timeout_s: float = 60) -> None:
  """SLURM holds a requeued job for about 30 s (its begin time, fixed in slurmctld); once
  `job` waits for it, let it start at once. What the test checks is unchanged: the job is
  requeued, not resubmitted, and resumes from its checkpoint."""
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    state = subprocess.run(['squeue', '-h', '-j', job, '-o', '%T %r'], capture_output=True,
                           text=True, timeout=30).stdout.split()
    if state == ['PENDING', 'BeginTime']:
      subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], check=True,
                     timeout=30)
      return
    if not state:
      return  # gone from the queue: the assertions below say why
    time.sleep(0.2)


@needs_slurm
def test_a_slurm_sweep_with_a_preempted_point_equals_the_local_sweep(
    text_config, tmp_path, repo_root):
  steps = ['--config.train.num_steps=300', '--config.train.ckpt_every=50']
  local_dir, slurm_dir = tmp_path / 'local', tmp_path / 'slurm'
  local = subprocess.run(
      sweep_command(repo_root, local_dir, text_config, *steps,
                    sweep='runlocal,kinds=dense+svd,ranks=4'),
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]

  # On SLURM: one array of both points, one CPU each; dense gets SIGTERM through scancel
  # once it has a checkpoint (as on preemption), is requeued by submitit and resumes.
  cmd = sweep_command(repo_root, slurm_dir, text_config, *steps, '--sweep_launcher=slurm',
                      '--sweep_workers=2', '--config.launcher.cpus_per_task=1',
                      '--config.launcher.time_min=10', sweep='runlocal,kinds=dense+svd,ranks=4')
  sweep = subprocess.Popen(cmd, cwd=repo_root, env=cli_env(1), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  dense_log = slurm_dir / 'dense' / 'train.log'
  deadline = time.time() + 240
  while time.time() < deadline and not has_checkpoint(slurm_dir / 'dense'):
    assert sweep.poll() is None, sweep.communicate()[0][-3000:]
    time.sleep(0.1)
  job = slurm_job_of(dense_log)
  assert job, dense_log.read_text()[-2000:]
  subprocess.run(['scancel', '--signal=TERM', job], check=True, timeout=60)
  start_when_requeued(job)
  out, _ = sweep.communicate(timeout=420)
  assert sweep.returncode == 0, out[-3000:]
  assert 'dense: finished in' in out and 'svd_rank4: finished in' in out

  log = dense_log.read_text()
  assert re.search(r'SIGTERM at step \d+: checkpoint written', log), log[-3000:]
  resumed = re.findall(r'Resumed \S+ at step (\d+)', log)
  assert len(resumed) == 1 and 0 < int(resumed[0]) < 300, log[-3000:]
  assert len(re.findall(r'sweep point dense, job ', log)) == 2  # the same job, requeued
  assert summary_rows(slurm_dir) == summary_rows(local_dir)


@needs_slurm
def test_slurm_refusing_a_job_names_the_launcher_field(text_config, tmp_path, repo_root):
  result = subprocess.run(
      sweep_command(repo_root, tmp_path / 'sweep', text_config,
                    '--sweep_launcher=slurm', '--config.launcher.partition=nowhere',
                    sweep='runlocal,kinds=dense'),
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=120)
  # A config field (launcher.partition) SLURM refuses: a usage error, exit 2.
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: SLURM refused') and "launcher.partition='nowhere'" in last
  assert 'Traceback' not in result.stderr


@needs_slurm
def test_two_srun_tasks_of_train_py_distributed_equal_one_process(
    tiny_config, tmp_path, repo_root):
  tiny_config.train.num_steps = 6
  one = subprocess.run(command(repo_root, tmp_path / 'one', tiny_config), cwd=repo_root,
                       env=cli_env(2), capture_output=True, text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-3000:]
  # srun starts both tasks; jax.distributed.initialize() reads SLURM's environment.
  two = subprocess.run(
      ['srun', '--ntasks=2', '--cpus-per-task=1', '--kill-on-bad-exit=1', '--time=10',
       *command(repo_root, tmp_path / 'two', tiny_config, '--distributed')],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
  reference = json.loads((tmp_path / 'one' / 'summary.json').read_text())
  summary = json.loads((tmp_path / 'two' / 'summary.json').read_text())
  assert summary['devices']['count'] == 2 and summary['devices']['processes'] == 2
  for key in ('train_loss', 'valid_ppl', 'test_ppl'):
    assert summary[key] == pytest.approx(reference[key], rel=1e-5), key



def test_a_rerun_waits_for_points_still_queued_on_slurm_instead_of_resubmitting(
    tmp_path, monkeypatch):
  monkeypatch.setattr(launcher, '_has_command', lambda name: True)
  for name in ('PYTHONPATH', 'TQDM_MININTERVAL'):  # a Launcher sets them for its jobs
    monkeypatch.setenv(name, os.environ.get(name, ''))
  slurm = launcher.make_launcher('slurm', tmp_path, common.launcher(), workers=2)
  (tmp_path / launcher.SUBMITIT_DIR).mkdir(exist_ok=True)
  (tmp_path / launcher.SUBMITIT_DIR / launcher.JOBS_FILE).write_text(
      json.dumps({'dense': '41_0', 'svd_rank8': '41_1', 'albert_rank8': '41_2'}))
  monkeypatch.setattr(launcher, '_slurm_queue', lambda: {'41_1', '57'})  # only svd_rank8
  points = {name: tmp_path / name for name in ('dense', 'svd_rank8', 'albert_rank8')}
  (waiting,) = slurm.queued_earlier(points)
  assert waiting.name == 'svd_rank8' and waiting.job.job_id == '41_1'
  assert waiting.job.paths.result_pickle.parent == tmp_path / launcher.SUBMITIT_DIR / '41_1'
  assert launcher.make_launcher('local', tmp_path, None,
                                workers=1).queued_earlier(points) == []


def test_a_launcher_that_cannot_run_names_the_flag_or_the_config_section_to_fix(tmp_path):
  with pytest.raises(ValueError, match=r"--sweep_launcher='pbs' must be one of local, slurm"):
    launcher.make_launcher('pbs', tmp_path, None, workers=1)
  with pytest.raises(ValueError, match=r'--sweep_workers=0 must be >= 1'):
    launcher.make_launcher('local', tmp_path, None, workers=0)
  with pytest.raises(ValueError, match=r'the config has no `launcher` section'):
    launcher.make_launcher('slurm', tmp_path, None, workers=1)
