"""train.py and eval.py as a user runs them: flags, multi-process, SIGTERM, errors."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import brown
from factorized import embeddings
from factorized.config import build
from factorized.runtime import parallel
from factorized.train import trainer
from tests.conftest import TEST_XLA_FLAGS
from tests.test_trainer import final_params


def override_flags(config) -> list[str]:
  """--config.<field>=<value> for each field where `config` differs from brown:runlocal."""
  base = brown.get_config('runlocal')
  flags = []
  for section in ('data', 'model', 'train'):
    for key, value in config[section].items():
      if section == 'model' and key == 'embed':
        for sub, sub_value in value.items():
          if sub_value != base.model.embed[sub]:
            flags.append(f'--config.model.embed.{sub}={sub_value}')
      elif value != base[section][key]:
        flags.append(f'--config.{section}.{key}={value}')
  return flags


def command(repo_root, workdir, config, *extra):
  return [sys.executable, str(repo_root / 'train.py'), '--config=configs/brown.py:runlocal',
          f'--workdir={workdir}', *override_flags(config), *extra]


def cli_env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}')
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tiny_config, tmp_path, repo_root):
  tiny_config.train.num_steps = 6
  reference = trainer.train_and_evaluate(
      build.from_config(tiny_config), str(tmp_path / 'one'),
      mesh=parallel.make_mesh(jax.devices()[:4]))
  port = free_port()
  workdir = tmp_path / 'two'
  procs = [
      subprocess.Popen(
          command(repo_root, workdir, tiny_config, '--distributed',
                  f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                  f'--process_id={i}'),
          cwd=repo_root, env=cli_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          text=True)
      for i in range(2)
  ]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs, strict=True):
    assert p.returncode == 0, out[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['devices']['count'] == 4 and summary['devices']['processes'] == 2
  np.testing.assert_allclose(summary['train_loss'], reference['train_loss'], rtol=1e-5)
  np.testing.assert_allclose(summary['valid_ppl'], reference['valid_ppl'], rtol=1e-5)
  for a, b in zip(final_params(tmp_path / 'one', 4), final_params(workdir, 4), strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_sigterm_writes_a_checkpoint_and_the_same_command_resumes(tiny_config, tmp_path,
                                                                   repo_root):
  tiny_config.train.update(num_steps=400, ckpt_every=1000, eval_every=1000, log_every=10)
  cmd = command(repo_root, tmp_path, tiny_config)
  proc = subprocess.Popen(cmd, cwd=repo_root, env=cli_env(1), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  while not list(tmp_path.glob('events.out.tfevents*')) and time.time() < deadline:
    time.sleep(0.2)  # events appear once training has started
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 143, out[-3000:]
  assert 'SIGTERM at step' in out and 'run the same command again to resume' in out
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert len(steps) == 1 and 0 < steps[0] < 400
  done = subprocess.run(cmd, cwd=repo_root, env=cli_env(1), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.strip().splitlines()[-1])['steps'] == 400


@pytest.mark.parametrize('override, message', [
    ('--config.train.lrr=1',
     'error: --config.train.lrr: configs/brown.py has no field train.lrr; did you mean '
     'train.lr?'),
    ('--config.model.embed.knd=svd',
     'error: --config.model.embed.knd: configs/brown.py has no field model.embed.knd; did '
     'you mean model.embed.kind, model.embed.head_kind?'),
    ('--config.train.lr=fast',
     'error: --config.train.lr=fast: train.lr takes a number in configs/brown.py (default '
     '0.003); give a number.'),
    ('--config.train.num_steps=1.5',
     'error: --config.train.num_steps=1.5: train.num_steps takes an integer in '
     'configs/brown.py (default 30); give an integer.'),
])
def test_a_bad_override_is_one_line_naming_the_field_and_exit_code_2(
    override, message, tmp_path, repo_root):
  result = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/brown.py:runlocal',
       f'--workdir={tmp_path}', override],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip() == message
  assert not any(tmp_path.iterdir())


def test_eval_cli_prints_and_writes_the_perplexity(tiny_config, tmp_path, repo_root):
  tiny_config.train.update(num_steps=2, warmup_steps=1, eval_every=2, ckpt_every=2)
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  result = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={tmp_path}', '--split=valid'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  # No library noise (orbax's read-only manager, JAX's backend probe) without --verbosity.
  assert not re.search(r'^(WARNING|W\d{4} )', result.stderr, re.M), result.stderr[-3000:]
  printed = json.loads(result.stdout)
  np.testing.assert_allclose(printed['valid_ppl'], summary['valid_ppl'], rtol=1e-6)
  assert json.loads((tmp_path / 'eval_valid.json').read_text()) == printed
  missing = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={tmp_path / "nothing"}'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2 and 'does not exist' in missing.stderr


def test_four_devices_on_a_busy_machine_evaluate_and_checkpoint_without_aborting(
    brown_zip, tmp_path, repo_root):
  # Evaluations and checkpoints coincide at steps 15 and 30 of runlocal; each evaluation
  # dispatches its batches back to back. With a psum in every batch, XLA:CPU ran their
  # forward passes concurrently and their collectives' waits starved its worker threads on
  # a busy host: the rendezvous timed out and aborted the process (exit 134).
  del brown_zip
  busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]
  try:
    result = subprocess.run(
        [sys.executable, str(repo_root / 'train.py'),
         '--config=configs/brown.py:kind=svd,rank=16,runlocal',
         '--config.model.embed.ortho_penalty=0.1', f'--workdir={tmp_path}'],
        cwd=repo_root, env=cli_env(4), capture_output=True, text=True, timeout=400)
  finally:
    for process in busy:
      process.kill()
      process.wait()
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / 'summary.json').read_text())['steps'] == 30


@pytest.mark.parametrize('config,workdir_is_file,message', [
    ('configs/rank_sweep.py:runlocal,kinds=foo', False,
     "error: --config=configs/rank_sweep.py:runlocal,kinds=foo: Config argument kinds='foo': "
     f'expected a +-separated subset of {"+".join(embeddings.KINDS)}.'),
    ('configs/nonexistent.py', False,
     'error: --config=configs/nonexistent.py: no config file configs/nonexistent.py; give one '
     'of configs/brown.py, configs/lm.py, configs/rank_sweep.py.'),
    ('configs/brown.py:runlocal', True,
     'error: --workdir={workdir} is a file, not a directory; give a directory (train.py '
     'creates it when missing).'),
    # Refused before the corpus is read: no data directory is needed to be told.
    ('configs/brown.py:runlocal,kind=foo', False,
     f"error: model.embed.kind='foo' is unknown; allowed: {'|'.join(embeddings.KINDS)}."),
])
def test_a_bad_config_file_argument_or_workdir_is_one_line_and_exit_code_2(
    config, workdir_is_file, message, tmp_path, repo_root):
  workdir = tmp_path / 'run'
  if workdir_is_file:
    workdir.write_text('keep me')
  env = dict(cli_env(1), FACTORIZED_DATA_DIR=str(tmp_path / 'no_data'),
             FACTORIZED_CACHE_DIR=str(tmp_path / 'no_cache'))
  result = subprocess.run(
      [sys.executable, 'train.py', f'--config={config}', f'--workdir={workdir}'],
      cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip() == message.format(workdir=workdir)
  if workdir_is_file:
    assert workdir.read_text() == 'keep me'


def test_the_config_file_is_executed_once_per_start(tmp_path, repo_root):
  """train.py reads its config file once: the flag's parse; get_sweep() and the error
  messages read the module it executed."""
  executions = tmp_path / 'executions'
  config_file = tmp_path / 'counted.py'
  config_file.write_text(
      'import sys\n'
      f'sys.path.insert(0, {str(repo_root)!r})\n'
      f'with open({str(executions)!r}, "a") as f:\n'
      '  f.write("x")\n'
      'from configs import brown\n\n\n'
      'def get_config(arg=None):\n'
      '  return brown.get_config("runlocal")\n\n\n'
      'def get_sweep(arg=None):\n'
      '  return [{"model.embed.kind": "dense"}]\n')
  (tmp_path / 'sweep').mkdir()
  result = subprocess.run(
      [sys.executable, 'train.py', f'--config={config_file}', f'--workdir={tmp_path / "sweep"}',
       '--sweep_report_only'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert executions.read_text() == 'x'
