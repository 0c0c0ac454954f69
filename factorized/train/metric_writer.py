"""TensorBoard event writing with tensorboardX (no TensorFlow), from process 0 only.

Events go into the run's workdir itself, so a sweep directory is one logdir whose runs
are the sweep's points. Hyper-parameters go to the HParams plugin in the same run, with
`hparams/valid_ppl` and `hparams/test_ppl` as its metrics (written as scalars), and the same
on the frequent types' tokens (`hparams/valid_frequent_ppl`, `hparams/test_frequent_ppl`:
types seen at least eval.frequent_count times in train). Facts that
do not change over a run (parameter counts) go to the HParams columns and a text summary,
not to single-point scalar charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summaries

HPARAM_METRICS = ('hparams/valid_ppl', 'hparams/test_ppl', 'hparams/valid_frequent_ppl',
                  'hparams/test_frequent_ppl')


class MetricWriter:
  """Writes scalars and hyper-parameters; a no-op on processes other than 0."""

  def __init__(self, logdir: str):
    self._writer = SummaryWriter(logdir=logdir) if jax.process_index() == 0 else None
    self._session_end = None

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Writes each finite value under its tag at `step` (None, a group without tokens such as
    the frequent types of a tiny corpus, is skipped)."""
    if self._writer is None:
      return
    for tag, value in values.items():
      if value is None:
        continue
      value = float(value)
      if math.isfinite(value):
        self._writer.add_scalar(tag, value, global_step=int(step))

  def text(self, tag: str, markdown: str) -> None:
    """Writes a Markdown text summary (TensorBoard's Text dashboard) at step 0."""
    if self._writer is not None:
      self._writer.add_text(tag, markdown, global_step=0)

  def hparams(self, values: Mapping[str, bool | int | float | str]) -> None:
    """Declares this run's hyper-parameters and the HParams metrics (HPARAM_METRICS).

    Every run writes the same keys and metric tags, so the sweep's runs share one table.
    """
    if self._writer is None:
      return
    experiment, session_start, self._session_end = hparams_summaries(
        dict(values), {tag: 0.0 for tag in HPARAM_METRICS})
    self._writer.file_writer.add_summary(experiment)
    self._writer.file_writer.add_summary(session_start)

  def end_session(self) -> None:
    """Marks the HParams session finished (after the last metric is written)."""
    if self._writer is not None and self._session_end is not None:
      self._writer.file_writer.add_summary(self._session_end)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
