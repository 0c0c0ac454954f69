r"""Sweeps: every point of a config file's `get_sweep()` trained in its own sub-workdir.

A config file that defines `get_sweep(arg)` (configs/rank_sweep.py) makes train.py run a
sweep: the points are dicts of dotted config overrides applied on top of `--config`
(command-line overrides included, so they apply to every point), and point `p` trains in
`<workdir>/<name>` where the name spells its overrides (`dense`, `svd_rank64`,
`albert_rank8_untied`).

- Finished (summary.json there and the same config) points are skipped; unfinished ones
  resume from their last checkpoint, so a sweep killed half-way continues where it stopped
  when the same command runs again.
- Each point is a subprocess (`python -m factorized.sweep <sub-workdir>`, which trains the
  config that the sweep saved as the sub-workdir's config.json), so a failing or crashing
  point cannot take the others down; `workers` of them run at a time. Output goes to
  `<sub-workdir>/train.log`; a failure is listed at the end with its exit code and the
  log's last lines.
- SIGTERM or Ctrl-C stops the sweep: running points get the signal, write a checkpoint and
  exit; no new point starts.
- At the end the reports are rewritten from every summary in the directory
  (`sweep_report.write_reports`).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections
from absl import app, logging

from factorized import summary as summary_lib
from factorized import sweep_report
from factorized import workdir as workdir_lib

LOG_FILE = 'train.log'
EXIT_INTERRUPTED = 143  # what train.py and a point return after SIGTERM
_LOG_TAIL_LINES = 15


@dataclasses.dataclass
class Point:
  """One run of a sweep: its name (= sub-workdir), overrides and full config."""

  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict


def load_sweep(config_filename: str) -> list[dict] | None:
  """`get_sweep(arg)` of the config file named as `path.py[:arg]`; None if it has none."""
  path, _, arg = config_filename.partition(':')
  spec = importlib.util.spec_from_file_location(f'_sweep_config_{pathlib.Path(path).stem}', path)
  if spec is None or not os.path.exists(path):
    raise FileNotFoundError(f'--config={config_filename}: no config file {path}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_sweep = getattr(module, 'get_sweep', None)
  return None if get_sweep is None else list(get_sweep(arg or None))


def point_name(overrides: dict[str, Any]) -> str:
  """The sub-workdir name of a point: kind, then `rank<R>`, `untied`, other `<field><value>`."""
  parts = []
  for key, value in overrides.items():
    field = key.rsplit('.', 1)[-1]
    if field == 'kind':
      parts.insert(0, str(value))
    elif field == 'head':
      if value != 'tied':
        parts.append(str(value))
    else:
      parts.append(f'{field}{value}')
  return '_'.join(parts).replace('/', '-') or 'base'


def make_points(base: ml_collections.ConfigDict, sweep: list[dict], *,
                overridden: Iterable[str] = ()) -> list[Point]:
  """Applies each point's overrides to a copy of `base`; names must be unique.

  `overridden` (the command line's --config.* fields) only serves a warning when a point
  sets one of them: the point's value wins.
  """
  clashes = sorted({key for overrides in sweep for key in overrides} & set(overridden))
  if clashes:
    logging.warning('--config.%s: set by the sweep points, whose values win.',
                    ', --config.'.join(clashes))
  points, seen = [], set()
  for overrides in sweep:
    name = point_name(overrides)
    if name in seen or name == sweep_report.SWEEP_RUN:
      raise ValueError(f'get_sweep() gives two points named {name!r} (or the reserved name '
                       f'{sweep_report.SWEEP_RUN!r}): make their overrides differ.')
    seen.add(name)
    config = copy.deepcopy(base)
    for key, value in overrides.items():
      *parents, field = key.split('.')
      node = config
      for parent in parents:
        node = node.get(parent) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(node, ml_collections.ConfigDict) or field not in node:
        raise ValueError(f'get_sweep() point {name!r} overrides {key!r}, which is not a '
                         'config field; fix the sweep in the config file.')
      node[field] = value
    points.append(Point(name, dict(overrides), config))
  return points


def is_finished(point: Point, sweep_dir: str) -> bool:
  """True when the point's sub-workdir holds summary.json of this same config."""
  workdir = pathlib.Path(sweep_dir) / point.name
  saved = workdir / workdir_lib.CONFIG_FILE
  if not (workdir / summary_lib.SUMMARY_FILE).exists() or not saved.exists():
    return False
  return not workdir_lib.config_differences(
      json.loads(saved.read_text()), workdir_lib.config_to_dict(point.config))


def _log_tail(path: pathlib.Path, start: int) -> str:
  """The last lines this attempt wrote to `path` (progress-bar redraws collapsed)."""
  with open(path, 'rb') as f:
    f.seek(start)
    text = f.read().decode('utf-8', 'replace')
  lines = [line.rsplit('\r', 1)[-1].rstrip() for line in text.split('\n')]
  return '\n'.join([line for line in lines if line][-_LOG_TAIL_LINES:])


class _Running:
  """A point's subprocess with its log file."""

  def __init__(self, point: Point, workdir: pathlib.Path, env: dict):
    self.point, self.workdir = point, workdir
    self.log_path = workdir / LOG_FILE
    self.log = open(self.log_path, 'ab')  # noqa: SIM115 (closed in finish)
    self.log_start = self.log.tell()
    self.log.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} sweep point '
                   f'{point.name}\n'.encode())
    self.log.flush()
    self.start = time.time()
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'factorized.sweep', str(workdir)],
        stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

  def finish(self) -> int:
    self.log.close()
    return self.process.returncode


def _child_env(workers: int) -> dict:
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parent.parent)  # where `factorized` lives
  env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH')) if p)
  env.setdefault('TQDM_MININTERVAL', '5')  # a log file, not a terminal
  if workers > 1:  # points sharing one accelerator must not each grab most of its memory
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  return env


def run_sweep(points: list[Point], sweep_dir: str, *, workers: int = 1,
              echo: Callable[[str], None] = print) -> int:
  """Runs the unfinished points, `workers` at a time; returns the sweep's exit code.

  0: every point finished; 1: some failed (listed); 143: stopped by a signal (rerun to
  resume). The reports are rewritten in every case.
  """
  if workers < 1:
    raise ValueError(f'--sweep_workers={workers} must be >= 1.')
  root = pathlib.Path(sweep_dir)
  root.mkdir(parents=True, exist_ok=True)
  todo = collections.deque()
  failures, interrupted, done, skipped = {}, [], [], []
  for point in points:
    if is_finished(point, sweep_dir):
      skipped.append(point.name)
      echo(f'{point.name}: finished earlier, skipped')
      continue
    try:  # The config check and config.json happen here, so the point trains exactly this.
      workdir_lib.prepare_workdir(root / point.name, point.config)
    except ValueError as error:
      failures[point.name] = f'refused: {error}'
      echo(f'{point.name}: FAILED: {error}')
      continue
    todo.append(point)

  stop = {'signal': None}
  running: dict[str, _Running] = {}

  def handle(signum, frame):
    del frame
    stop['signal'] = signum
    for run in running.values():
      if run.process.poll() is None:
        run.process.send_signal(signum)

  previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
  env = _child_env(workers)
  total = len(todo)
  try:
    while running or (todo and stop['signal'] is None):
      while todo and len(running) < workers and stop['signal'] is None:
        point = todo.popleft()
        running[point.name] = _Running(point, root / point.name, env)
        echo(f'{point.name}: started ({total - len(todo)}/{total}), log in '
             f'{running[point.name].log_path}')
      time.sleep(0.2)
      for name, run in list(running.items()):
        if run.process.poll() is None:
          continue
        del running[name]
        code = run.finish()
        seconds = time.time() - run.start
        if code == 0 and (run.workdir / summary_lib.SUMMARY_FILE).exists():
          done.append(name)
          result = json.loads((run.workdir / summary_lib.SUMMARY_FILE).read_text())
          echo(f'{name}: finished in {seconds:.0f}s, valid ppl {result["valid_ppl"]:.2f}, '
               f'test ppl {result["test_ppl"]:.2f}')
        elif stop['signal'] is not None or code == EXIT_INTERRUPTED:
          interrupted.append(name)
          echo(f'{name}: interrupted after {seconds:.0f}s (exit {code})')
        else:
          status = f'exit {code}' if code >= 0 else f'killed by {signal.Signals(-code).name}'
          failures[name] = f'{status}; the end of {run.log_path}:\n' + _indent(
              _log_tail(run.log_path, run.log_start))
          echo(f'{name}: FAILED ({status}) after {seconds:.0f}s; see {run.log_path}')
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)

  table = sweep_report.write_reports(sweep_dir)
  echo(f'\n{table}\nReports: {root / sweep_report.CSV_FILE}, {root / sweep_report.MD_FILE}, '
       f'{root / sweep_report.PNG_FILE}; TensorBoard: tensorboard --logdir={sweep_dir}')
  not_started = [point.name for point in todo]
  echo(f'{len(points)} points: {len(done)} trained now, {len(skipped)} finished earlier, '
       f'{len(interrupted)} interrupted, {len(not_started)} not started, '
       f'{len(failures)} failed.')
  if stop['signal'] is not None:
    echo(f'Sweep stopped by {signal.Signals(stop["signal"]).name}: interrupted '
         f'{interrupted or "none"}, not started {not_started or "none"}. Run the same command '
         'again to resume.')
  if failures:
    echo(f'{len(failures)} of {len(points)} points failed:')
    for name, reason in failures.items():
      echo(f'  {name}: {reason}')
  if stop['signal'] is not None:
    return EXIT_INTERRUPTED
  return 1 if failures else 0


def _indent(text: str) -> str:
  return '\n'.join(f'      {line}' for line in text.splitlines())


def _train_point(argv: list[str]) -> None:
  """Trains the config saved in the sub-workdir argv[1] (the sweep's child process)."""
  if len(argv) != 2:
    raise app.UsageError('usage: python -m factorized.sweep <point workdir>')
  import jax

  from factorized import trainer

  workdir = argv[1]
  config = workdir_lib.load_config(workdir)
  logging.info('JAX devices: %s', jax.devices())
  try:
    trainer.train_and_evaluate(config, workdir)
  except trainer.TrainingInterrupted as stopped:
    logging.warning('%s', stopped)
    sys.exit(EXIT_INTERRUPTED)
  except (ValueError, FileNotFoundError, trainer.NonFiniteLoss) as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(_train_point)
