"""The stop signals of a run: SIGTERM, SIGINT and SIGUSR2 become a flag the loop reads.

No JAX here: a sweep point's job enters a StopRequest as it starts, before JAX is imported,
so that no signal during a run's set-up is lost (factorized/sweeps/launcher.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator


class StopRequest:
  """Turns SIGTERM, SIGINT and SIGUSR2 into a flag that the loop checks once per step.

  SIGUSR2 is what SLURM sends before a time limit when asked (`sbatch --signal=USR2@120`,
  and submitit's jobs, factorized/sweeps/launcher.py). Installed before the run is set up
  (by `train_and_evaluate`, or earlier by its caller), so a signal during set-up (reading
  the corpus, compiling, restoring) stops the run at its first step instead of being lost.
  After the loop, while nothing is left to checkpoint, `acting` stops the final evaluation
  at once (TrainingInterrupted: the same command finishes it).
  """

  def __init__(self):
    self.signal_name = None
    self._on_signal = None  # called with the signal's name as it arrives (it may raise)
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    if self._on_signal is not None:
      self._on_signal(self.signal_name)

  @contextlib.contextmanager
  def acting(self, on_signal: Callable[[str], None]) -> Iterator[StopRequest]:
    """Inside: a signal also calls `on_signal` with its name at once (it may raise)."""
    self._on_signal = on_signal
    try:
      yield self
    finally:
      self._on_signal = None

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
