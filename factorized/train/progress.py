"""Training progress: each run's `progress.json`.

The trainer rewrites `<workdir>/progress.json` (step, num_steps, loss, steps/s, tokens/s)
whenever it reads its metrics (every `train.log_every` steps), so anything that can see the
workdir, on this machine or across a cluster's shared file system, can tell how far a run
is without talking to it (a sweep's live view: factorized/sweeps/progress.py).
"""

from __future__ import annotations

import json
import pathlib
import time

from factorized import files

PROGRESS_FILE = 'progress.json'


def write_progress(workdir: str | pathlib.Path, *, step: int, num_steps: int, loss: float,
                   steps_per_s: float, tokens_per_s: float) -> None:
  """Rewrites the run's progress.json (atomically: readers never see half a file)."""
  files.write_json_atomic(pathlib.Path(workdir) / PROGRESS_FILE, {
      'step': int(step), 'num_steps': int(num_steps), 'loss': float(loss),
      'steps_per_s': float(steps_per_s), 'tokens_per_s': float(tokens_per_s),
      'time': time.time()})


def read_progress(workdir: str | pathlib.Path) -> dict | None:
  """The run's latest progress.json, or None before its first write."""
  try:
    return json.loads((pathlib.Path(workdir) / PROGRESS_FILE).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None
