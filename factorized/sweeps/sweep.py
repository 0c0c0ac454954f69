r"""Sweeps: every point of a config file's `get_sweep()` trained in its own sub-workdir.

A config file that defines `get_sweep(arg)` (configs/rank_sweep.py) makes train.py run a
sweep: the points are dicts of dotted config overrides applied on top of `--config`
(command-line overrides included, so they apply to every point), and point `p` trains in
`<workdir>/<name>` where the name spells its overrides (`dense`, `svd_rank64`,
`albert_rank8_untied`).

- Finished (summary.json there and the same config) points are skipped; unfinished ones
  resume from their last checkpoint, so a sweep killed half-way continues where it stopped
  when the same command runs again.
- The corpus is prepared (downloaded, tokenised, cached) once, before any point starts.
- Each point is a submitit job (factorized/sweeps/launcher.py): on this machine, `workers` at a
  time (`--sweep_launcher=local`), or one SLURM job array (`--sweep_launcher=slurm`), so a
  failing or crashing point cannot take the others down. Output goes to
  `<sub-workdir>/train.log`; a failure is listed at the end with the log's last lines.
- SIGTERM or Ctrl-C stops the sweep: local points write a checkpoint and exit, and no new
  point starts; SLURM points keep running on the cluster.
- At the end the reports are rewritten from every summary in the directory
  (`sweep_report.write_reports`); `train.py --sweep_report_only` writes them and runs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from absl import logging

from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table
from factorized.config import specs
from factorized.spec import Spec
from factorized.sweeps import launcher as launcher_lib
from factorized.sweeps import progress as progress_lib
from factorized.train import summary as summary_lib
from factorized.train import workdir as workdir_lib

LOG_FILE = launcher_lib.LOG_FILE
EXIT_INTERRUPTED = launcher_lib.EXIT_INTERRUPTED


@dataclasses.dataclass
class Point:
  """One run of a sweep: its name (= sub-workdir), overrides and full config."""

  name: str
  overrides: dict[str, Any]
  config: Spec


def load_sweep(module, config_filename: str) -> list[dict] | None:
  """`get_sweep(arg)` of the config file's `module` (as --config=`path.py[:arg]` executed
  it); None if it has none."""
  _, _, arg = config_filename.partition(':')
  get_sweep = getattr(module, 'get_sweep', None)
  return None if get_sweep is None else list(get_sweep(arg or None))


def point_name(overrides: dict[str, Any]) -> str:
  """The sub-workdir name of a point: kind, then `rank<R>`, `untied`, `head<kind><rank>` (an
  untied head of its own kind), other `<field><value>`."""
  parts = []
  fields = {key.rsplit('.', 1)[-1]: value for key, value in overrides.items()}
  for key, value in overrides.items():
    field = key.rsplit('.', 1)[-1]
    if field == 'kind':
      parts.insert(0, str(value))
    elif field == 'head':
      if value != 'tied':
        parts.append(str(value))
    elif field == 'head_kind':
      parts.append(f'head{value}{fields.get("head_rank", "")}')
    elif field == 'head_rank' and 'head_kind' in fields:
      continue
    else:
      parts.append(f'{field}{value}')
  return '_'.join(parts).replace('/', '-') or 'base'


def make_points(base: Spec, sweep: list[dict], *,
                overridden: Iterable[str] = ()) -> list[Point]:
  """Applies each point's overrides to a copy of `base`; names must be unique.

  `overridden` (the command line's --config.* fields) only serves a warning when a point
  sets one of them: the point's value wins.
  """
  base = specs.from_config(base)
  clashes = sorted({key for overrides in sweep for key in overrides} & set(overridden))
  if clashes:
    logging.warning('--config.%s: set by the sweep points, whose values win.',
                    ', --config.'.join(clashes))
  points, seen = [], set()
  for overrides in sweep:
    name = point_name(overrides)
    if name in seen or name == sweep_table.SWEEP_RUN:
      raise ValueError(f'get_sweep() gives two points named {name!r} (or the reserved name '
                       f'{sweep_table.SWEEP_RUN!r}): make their overrides differ.')
    seen.add(name)
    try:
      config = base.replace(**overrides)
    except KeyError as missing:
      raise ValueError(f'get_sweep() point {name!r} overrides {missing.args[0]!r}, which is not '
                       'a config field; fix the sweep in the config file.') from None
    config = specs.from_config(config)  # each point validated before any point starts
    points.append(Point(name, dict(overrides), config))
  return points


def is_finished(point: Point, sweep_dir: str) -> bool:
  """True when the point's sub-workdir holds summary.json of this same config."""
  workdir = pathlib.Path(sweep_dir) / point.name
  saved = workdir / workdir_lib.CONFIG_FILE
  if not (workdir / summary_lib.SUMMARY_FILE).exists() or not saved.exists():
    return False
  return not workdir_lib.config_differences(
      json.loads(saved.read_text()), point.config.to_dict())


def prepare_corpora(points: list[Point], echo: Callable[[str], None]) -> None:
  """Downloads, tokenises and caches each distinct corpus of `points` once, here, so that a
  missing corpus fails once, before any point starts, and parallel points only read the
  cache."""
  from factorized.data import pipeline as data_lib

  seen = set()
  for point in points:
    key = point.config.data.to_json(sort_keys=True)
    if key in seen:
      continue
    seen.add(key)
    corpus = data_lib.prepare_corpus(point.config.data)
    echo(f'corpus {corpus.name}: {corpus.vocab_size:,} types, '
         f'{corpus.splits["train"].size:,} train tokens ({corpus.cache_path})')


def run_sweep(points: list[Point], sweep_dir: str, *, launcher: str = 'local',
              workers: int = 1, verbosity: int | None = None,
              progress_every_s: float = 60.0, poll_s: float | None = None) -> int:
  """Runs the unfinished points through `launcher`; returns the sweep's exit code.

  0: every point finished; 1: some failed (listed); 143: stopped by a signal (rerun to
  resume). The reports are rewritten in every case. Progress: a live view on a terminal,
  else a line every `progress_every_s` seconds (factorized/train/progress.py).
  """
  echo = print
  root = pathlib.Path(sweep_dir)
  root.mkdir(parents=True, exist_ok=True)
  todo: list[Point] = []
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
  if todo:
    launch = launcher_lib.Launcher(launcher, root, _launcher_config(todo[0], launcher),
                                   workers=workers, verbosity=verbosity)
    prepare_corpora(todo, echo)
  view = progress_lib.SweepProgress(
      {point.name: (root / point.name, point.config.train.num_steps) for point in todo},
      every_s=progress_every_s)
  echo = view.echo
  total, started = len(todo), 0
  running: list[launcher_lib.Job] = []
  stop = {'signal': None}

  def handle(signum, frame):
    del frame
    stop['signal'] = signum

  def start(batch: list[Point]) -> None:
    nonlocal started
    jobs = launch.submit({point.name: root / point.name for point in batch})
    for job in jobs:
      started += 1
      echo(f'{job.name}: started ({started}/{total}), log in {job.workdir / LOG_FILE}')
    running.extend(jobs)

  previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    if todo and launcher == 'slurm':
      waiting = launch.queued_earlier({point.name: root / point.name for point in todo})
      for job in waiting:
        echo(f'{job.name}: still queued or running from an earlier submission, waited for')
      running.extend(waiting)
      started = len(waiting)
      names = {job.name for job in waiting}
      batch, todo = [point for point in todo if point.name not in names], []
      if batch:
        start(batch)
    poll_s = poll_s if poll_s is not None else (5.0 if launcher == 'slurm' else 0.5)
    stopping = False
    while running or (todo and stop['signal'] is None):
      if stop['signal'] is not None and not stopping:
        stopping = True
        echo(f'{signal.Signals(stop["signal"]).name}: stopping the sweep. '
             + launch.stop(running))
        if launcher == 'slurm':
          break
      free = workers - len(running)
      if todo and free > 0 and stop['signal'] is None:
        batch, todo = todo[:free], todo[free:]
        start(batch)
      time.sleep(poll_s)
      ended = launch.poll(running)
      view.update([job.name for job in running if job.name not in ended], list(ended))
      for name, outcome in ended.items():
        job = next(job for job in running if job.name == name)
        running.remove(job)
        seconds = time.time() - job.start
        if outcome.status == 'done':
          done.append(name)
          echo(f'{name}: finished in {seconds:.0f}s, valid ppl '
               f'{outcome.summary["valid_ppl"]:.2f}, test ppl {outcome.summary["test_ppl"]:.2f}')
        elif outcome.status == 'interrupted' or stop['signal'] is not None:
          interrupted.append(name)
          echo(f'{name}: interrupted after {seconds:.0f}s')
        else:
          failures[name] = outcome.reason
          echo(f'{name}: FAILED after {seconds:.0f}s; see {job.workdir / LOG_FILE}')
  finally:
    view.close()
    for sig, handler in previous.items():
      signal.signal(sig, handler)

  echo = print
  still_running = [job.name for job in running]
  return _report(points, sweep_dir, echo, done=done, skipped=skipped, failures=failures,
                 interrupted=interrupted, not_started=[point.name for point in todo],
                 still_running=still_running, stop_signal=stop['signal'])


def _launcher_config(point: Point, launcher: str) -> Spec:
  if 'launcher' in point.config:
    return point.config.launcher
  if launcher == 'slurm':
    raise ValueError('--sweep_launcher=slurm: the config has no `launcher` section (SLURM '
                     'resources); add `config.launcher = common.launcher()` from '
                     'configs/common.py to the config file.')
  return Spec()


def write_reports(sweep_dir: str, echo: Callable[[str], None] = print) -> None:
  """Rewrites summary.csv/.md, the plots and the `sweep` TensorBoard run from the finished
  points' summaries, and prints the table."""
  root = pathlib.Path(sweep_dir)
  table = sweep_report.write_reports(sweep_dir)
  echo(f'\n{table}\nReports: {root / sweep_table.CSV_FILE}, {root / sweep_report.MD_FILE}, '
       f'{root / sweep_report.PNG_FILE}; TensorBoard: tensorboard --logdir={sweep_dir}')


def _report(points: list[Point], sweep_dir: str, echo: Callable[[str], None], *, done,
            skipped, failures, interrupted, not_started, still_running, stop_signal) -> int:
  write_reports(sweep_dir, echo)
  running = f', {len(still_running)} still running on SLURM' if still_running else ''
  echo(f'{len(points)} points: {len(done)} trained now, {len(skipped)} finished earlier, '
       f'{len(interrupted)} interrupted, {len(not_started)} not started, '
       f'{len(failures)} failed{running}.')
  if stop_signal is not None:
    echo(f'Sweep stopped by {signal.Signals(stop_signal).name}: interrupted '
         f'{interrupted or "none"}, not started {not_started or "none"}'
         + (f', still running on SLURM {still_running}' if still_running else '')
         + '. Run the same command again to resume.')
  if failures:
    echo(f'{len(failures)} of {len(points)} points failed:')
    for name, reason in failures.items():
      echo(f'  {name}: {reason}')
  if stop_signal is not None:
    return EXIT_INTERRUPTED
  return 1 if failures else 0
