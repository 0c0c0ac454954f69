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

import contextlib
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
from factorized.config import build
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
  """`get_sweep(arg)` of the config file's `module` (as --config=`<file>.py[:arg]` executed
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
  base = build.from_config(base)
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
    config = build.from_config(config)  # each point validated before any point starts
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


@dataclasses.dataclass
class SweepResult:
  """What became of a sweep's points: its report and exit code read this."""

  sweep_dir: str
  points: int
  done: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  failures: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> why
  interrupted: list[str] = dataclasses.field(default_factory=list)
  not_started: list[str] = dataclasses.field(default_factory=list)
  still_running: list[str] = dataclasses.field(default_factory=list)  # on SLURM, after a stop
  stop_signal: int | None = None


def run_sweep(points: list[Point], sweep_dir: str, *, launcher: str = 'local',
              workers: int = 1, verbosity: int | None = None,
              progress_every_s: float = 60.0, poll_s: float | None = None) -> int:
  """Runs the unfinished points through `launcher`; returns the sweep's exit code.

  0: every point finished; 1: some failed (listed); 143: stopped by a signal (rerun to
  resume). The reports are rewritten in every case. Progress: a live view on a terminal,
  else a line every `progress_every_s` seconds (factorized/train/progress.py).
  """
  root = pathlib.Path(sweep_dir)
  root.mkdir(parents=True, exist_ok=True)
  result = SweepResult(sweep_dir, len(points))
  todo = _unfinished(points, root, result)
  if todo:
    config = todo[0].config
    launch = launcher_lib.make_launcher(
        launcher, root, config.launcher if 'launcher' in config else None, workers=workers,
        verbosity=verbosity)
    prepare_corpora(todo, print)
    view = progress_lib.SweepProgress(
        {point.name: (root / point.name, point.config.train.num_steps) for point in todo},
        every_s=progress_every_s)
    with contextlib.closing(view), _StopSignals() as stop:
      _Sweep(launch, root, todo, view, result).run(
          stop, launch.poll_s if poll_s is None else poll_s)
  return _report(result)


def _unfinished(points: list[Point], root: pathlib.Path, result: SweepResult) -> list[Point]:
  """The points to run, each workdir prepared; finished ones are skipped and refused ones
  (another config in their workdir) failed, in `result`."""
  todo = []
  for point in points:
    if is_finished(point, str(root)):
      result.skipped.append(point.name)
      print(f'{point.name}: finished earlier, skipped')
      continue
    try:  # The config check and config.json happen here, so the point trains exactly this.
      workdir_lib.prepare_workdir(root / point.name, point.config)
    except ValueError as error:
      result.failures[point.name] = f'refused: {error}'
      print(f'{point.name}: FAILED: {error}')
      continue
    todo.append(point)
  return todo


class _StopSignals:
  """SIGTERM and SIGINT, while the sweep waits for its points: the first one's number."""

  def __enter__(self) -> _StopSignals:
    self.signum = None
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Sweep:
  """The points of a sweep as they are submitted, run and end, each end in `result`."""

  def __init__(self, launch: launcher_lib.Launcher, root: pathlib.Path, todo: list[Point],
               view: progress_lib.SweepProgress, result: SweepResult):
    self.launch, self.root, self.todo, self.view, self.result = launch, root, todo, view, result
    self.total, self.started = len(todo), 0
    self.running: list[launcher_lib.Job] = []

  def run(self, stop: _StopSignals, poll_s: float) -> None:
    """Waits for the points queued earlier, then keeps starting points while there is room
    and no stop, and collects the ended ones until none runs; on a stop, stops them."""
    self.wait_for_earlier()
    stopping = False
    while self.running or (self.todo and stop.signum is None):
      if stop.signum is not None and not stopping:
        stopping = True
        self.view.echo(f'{signal.Signals(stop.signum).name}: stopping the sweep. '
                       + self.launch.stop(self.running))
        if not self.launch.waits_after_stop:
          break
      if stop.signum is None:
        self.start(self.launch.room(len(self.running)))
      time.sleep(poll_s)
      self.collect(stop)
    self.result.not_started = [point.name for point in self.todo]
    self.result.still_running = [job.name for job in self.running]
    self.result.stop_signal = stop.signum

  def workdirs(self, points: list[Point]) -> dict[str, pathlib.Path]:
    return {point.name: self.root / point.name for point in points}

  def wait_for_earlier(self) -> None:
    """Takes the points an earlier run submitted that still run (SLURM) as started."""
    waiting = self.launch.queued_earlier(self.workdirs(self.todo))
    for job in waiting:
      self.view.echo(f'{job.name}: still queued or running from an earlier submission, '
                     'waited for')
    names = {job.name for job in waiting}
    self.todo = [point for point in self.todo if point.name not in names]
    self.running.extend(waiting)
    self.started = len(waiting)

  def start(self, room: int) -> None:
    """Submits up to `room` of the points not started yet."""
    if not self.todo or room <= 0:
      return
    batch, self.todo = self.todo[:room], self.todo[room:]
    for job in self.launch.submit(self.workdirs(batch)):
      self.started += 1
      self.view.echo(f'{job.name}: started ({self.started}/{self.total}), '
                     f'log in {job.workdir / LOG_FILE}')
      self.running.append(job)

  def collect(self, stop: _StopSignals) -> None:
    """Records the jobs that have ended: done, interrupted (after a stop) or failed."""
    ended = self.launch.poll(self.running)
    self.view.update([job.name for job in self.running if job.name not in ended], list(ended))
    for name, outcome in ended.items():
      job = next(job for job in self.running if job.name == name)
      self.running.remove(job)
      seconds = time.time() - job.start
      if outcome.status == 'done':
        self.result.done.append(name)
        self.view.echo(f'{name}: finished in {seconds:.0f}s, valid ppl '
                       f'{outcome.summary["valid_ppl"]:.2f}, test ppl '
                       f'{outcome.summary["test_ppl"]:.2f}')
      elif stop.signum is not None:
        self.result.interrupted.append(name)
        self.view.echo(f'{name}: interrupted after {seconds:.0f}s')
      else:
        self.result.failures[name] = outcome.reason
        self.view.echo(f'{name}: FAILED after {seconds:.0f}s; see {job.workdir / LOG_FILE}')


def write_reports(sweep_dir: str, echo: Callable[[str], None] = print) -> None:
  """Rewrites summary.csv/.md, the plots and the `sweep` TensorBoard run from the finished
  points' summaries, and prints the table."""
  root = pathlib.Path(sweep_dir)
  table = sweep_report.write_reports(sweep_dir)
  echo(f'\n{table}\nReports: {root / sweep_table.CSV_FILE}, {root / sweep_report.MD_FILE}, '
       f'{root / sweep_report.PNG_FILE}; TensorBoard: tensorboard --logdir={sweep_dir}')


def _report(result: SweepResult) -> int:
  """Rewrites the reports, prints what became of the points; the sweep's exit code."""
  write_reports(result.sweep_dir)
  still = result.still_running
  running = f', {len(still)} still running on SLURM' if still else ''
  print(f'{result.points} points: {len(result.done)} trained now, {len(result.skipped)} '
        f'finished earlier, {len(result.interrupted)} interrupted, {len(result.not_started)} '
        f'not started, {len(result.failures)} failed{running}.')
  if result.stop_signal is not None:
    print(f'Sweep stopped by {signal.Signals(result.stop_signal).name}: interrupted '
          f'{result.interrupted or "none"}, not started {result.not_started or "none"}'
          + (f', still running on SLURM {still}' if still else '')
          + '. Run the same command again to resume.')
  if result.failures:
    print(f'{len(result.failures)} of {result.points} points failed:')
    for name, reason in result.failures.items():
      print(f'  {name}: {reason}')
  if result.stop_signal is not None:
    return EXIT_INTERRUPTED
  return 1 if result.failures else 0
