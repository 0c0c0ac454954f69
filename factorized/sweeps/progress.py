r"""A sweep's live view of its points, read from each running point's progress.json
(factorized/train/progress.py).

`SweepProgress` turns the running points' files into one view: on a terminal, a bar per
running point (step/total, loss, tokens/s) under a bar for the whole sweep (points done,
steps done across points, elapsed, ETA from the measured rates); otherwise (CI, nohup, a
log file) one plain line every `every_s` seconds. Finished points keep their one-line
result above the bars.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import TextIO

import tqdm

from factorized.train.progress import read_progress


def _duration(seconds: float | None) -> str:
  if seconds is None or seconds != seconds or seconds == float('inf'):
    return '?'
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


@dataclasses.dataclass
class _Point:
  workdir: pathlib.Path
  num_steps: int
  step: int = 0
  state: str = 'queued'  # queued | running | ended
  info: dict | None = None
  bar: tqdm.tqdm | None = None


class SweepProgress:
  """The sweep's progress display; see the module docstring."""

  def __init__(self, points: dict[str, tuple[pathlib.Path, int]], *, every_s: float = 60.0,
               stream: TextIO | None = None, terminal: bool | None = None):
    self.stream = stream or sys.stdout
    self.terminal = self.stream.isatty() if terminal is None else terminal
    self.every_s = every_s
    self.points = {name: _Point(pathlib.Path(w), n) for name, (w, n) in points.items()}
    self.start = time.time()
    self.last_line = self.start
    self.total_bar = None
    if self.terminal and self.points:
      self.total_bar = tqdm.tqdm(total=self.total_steps, desc='sweep', unit='step',
                                 file=self.stream, position=0, dynamic_ncols=True)

  @property
  def total_steps(self) -> int:
    return sum(point.num_steps for point in self.points.values())

  def echo(self, text: str) -> None:
    """Prints a line above the bars (or plainly)."""
    if self.total_bar is not None:
      self.total_bar.write(text, file=self.stream)
    else:
      print(text, file=self.stream, flush=True)

  def update(self, running: list[str], ended: list[str] = ()) -> None:
    """Reads the running points' progress files; draws the bars or, every `every_s`
    seconds when not on a terminal, prints a line."""
    for name in ended:
      point = self.points.get(name)
      if point is not None and point.state != 'ended':
        point.state = 'ended'
        point.step = point.num_steps
        if point.bar is not None:
          point.bar.close()
          point.bar = None
    for name in running:
      point = self.points.get(name)
      if point is None:
        continue
      point.state = 'running'
      info = read_progress(point.workdir)
      if info is not None:
        point.info, point.step = info, min(int(info['step']), point.num_steps)
    if self.terminal:
      self._draw()
    elif time.time() - self.last_line >= self.every_s:
      self.last_line = time.time()
      self.echo(self.line())

  def eta_s(self) -> float | None:
    """Seconds until every point has finished, at the running points' measured rates."""
    rate = sum(p.info['steps_per_s'] for p in self.points.values()
               if p.state == 'running' and p.info and p.info['steps_per_s'] > 0)
    remaining = sum(p.num_steps - p.step for p in self.points.values() if p.state != 'ended')
    return remaining / rate if rate > 0 else None

  def line(self) -> str:
    """One plain line: the sweep's totals, ETA, then each running point."""
    done = sum(p.state == 'ended' for p in self.points.values())
    steps = sum(p.step for p in self.points.values())
    total = self.total_steps
    parts = [f'sweep: {done}/{len(self.points)} points, {steps:,}/{total:,} steps '
             f'({100 * steps / max(total, 1):.0f}%), elapsed {_duration(time.time() - self.start)}'
             f', ETA {_duration(self.eta_s())}']
    for name, p in self.points.items():
      if p.state == 'running':
        if p.info:
          parts.append(f'{name} {p.step:,}/{p.num_steps:,} loss {p.info["loss"]:.3f} '
                       f'{p.info["tokens_per_s"]:,.0f} tok/s')
        else:
          parts.append(f'{name} starting')
    return ' | '.join(parts)

  def _draw(self) -> None:
    if self.total_bar is None:
      return
    self.total_bar.n = sum(p.step for p in self.points.values())
    done = sum(p.state == 'ended' for p in self.points.values())
    self.total_bar.set_postfix_str(f'{done}/{len(self.points)} points, ETA '
                                   f'{_duration(self.eta_s())}', refresh=False)
    self.total_bar.refresh()
    position = 1
    for name, p in self.points.items():
      if p.state != 'running':
        continue
      if p.bar is None:
        p.bar = tqdm.tqdm(total=p.num_steps, desc=name, unit='step', file=self.stream,
                          position=position, leave=False, dynamic_ncols=True)
      p.bar.n = p.step
      if p.info:
        p.bar.set_postfix_str(f'loss {p.info["loss"]:.3f}, {p.info["tokens_per_s"]:,.0f} tok/s',
                              refresh=False)
      p.bar.refresh()
      position += 1

  def close(self) -> None:
    for point in self.points.values():
      if point.bar is not None:
        point.bar.close()
    if self.total_bar is not None:
      self.total_bar.close()
