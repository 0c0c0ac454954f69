r"""Reading finished runs and sweeps: TensorBoard events and summaries into pandas, the
sweep table and its post-hoc rows, and a trained embedding's factors (notebooks/ call these;
embeddings/spectrum.py, interpret.py and plots.py work on what they return).

Shapes: V vocabulary, D model width, K an inner width of the factors.

Events are read with tensorboard's own EventAccumulator: the numbers TensorBoard shows.
A trained embedding's train-split token counts come from the run's train_counts.npy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Sequence

import jax
import numpy as np
import pandas as pd
from absl import logging as absl_logging
from tensorboard.backend.event_processing import event_accumulator

from factorized import embeddings
from factorized.analysis import table as sweep_table
from factorized.config import build
from factorized.data import pipeline as data_lib
from factorized.data import tokenizer as tokenizer_lib
from factorized.embeddings import spectrum
from factorized.evaluation import saved as eval_run
from factorized.runtime import parallel
from factorized.train import summary as summary_lib

SCALAR_COLUMNS = ('run', 'tag', 'step', 'value', 'wall_time')
REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[2])


def event_run_dirs(logdir: str | os.PathLike) -> dict[str, str]:
  """TensorBoard's runs under `logdir`: {name: directory}, each directory holding event files.

  Names are paths relative to `logdir` ('.' for `logdir` itself), as TensorBoard names them.
  """
  logdir = os.fspath(logdir)
  if not os.path.isdir(logdir):
    raise FileNotFoundError(f'{logdir} is not a directory: train a run or a sweep into it first.')
  runs = {}
  for directory, subdirs, files in os.walk(logdir):
    subdirs.sort()
    if any('tfevents' in name for name in files):
      runs[os.path.relpath(directory, logdir)] = directory
  return runs


def load_scalars(logdir: str | os.PathLike, runs: Sequence[str] | None = None) -> pd.DataFrame:
  """Every scalar of every run under `logdir` (or of `runs`): a tidy DataFrame with columns
  run, tag, step, value, wall_time, sorted by run, tag and step.

  All values are kept (no TensorBoard down-sampling). As in TensorBoard, a resumed run
  may show the steps between its last checkpoint and the interruption twice.
  """
  found = event_run_dirs(logdir)
  missing = sorted(set(runs or ()) - set(found))
  if missing:
    raise FileNotFoundError(f'No TensorBoard events for runs {missing} under {logdir}; '
                            f'runs with events: {sorted(found)}.')
  rows = []
  for name in (runs if runs is not None else sorted(found)):
    accumulator = event_accumulator.EventAccumulator(
        found[name], size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    for tag in accumulator.Tags()[event_accumulator.SCALARS]:
      rows.extend((name, tag, e.step, e.value, e.wall_time) for e in accumulator.Scalars(tag))
  table = pd.DataFrame(rows, columns=list(SCALAR_COLUMNS))
  table = table.astype({'step': 'int64', 'value': 'float64', 'wall_time': 'float64'})
  return table.sort_values(['run', 'tag', 'step'], kind='stable').reset_index(drop=True)


def scalar_series(scalars: pd.DataFrame, run: str, tag: str) -> pd.Series:
  """One run's values of `tag`, indexed by step."""
  rows = scalars[(scalars['run'] == run) & (scalars['tag'] == tag)]
  if rows.empty:
    raise KeyError(f'No scalar {tag!r} in run {run!r}; its tags: '
                   f'{sorted(scalars.loc[scalars["run"] == run, "tag"].unique())}.')
  return rows.set_index('step')['value'].rename(tag)


def final_scalars(scalars: pd.DataFrame, tags: Sequence[str]) -> pd.DataFrame:
  """The value of each of `tags` at its last step, one row per run (NaN where absent)."""
  rows = scalars[scalars['tag'].isin(tags)].sort_values('step', kind='stable')
  last = rows.groupby(['run', 'tag'])['value'].last().unstack('tag')
  return last.reindex(columns=list(tags))


def load_summary(workdir: str | os.PathLike) -> dict:
  """A finished run's summary.json (see train/summary.py)."""
  path = os.path.join(workdir, summary_lib.SUMMARY_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: the run in {workdir} has not finished '
                            '(run train.py again on it to resume).')
  with open(path) as f:
    return json.load(f)


def repo_path(path: str | os.PathLike) -> str:
  """`path` as given when it exists (or is absolute), else relative to the repository root:
  notebooks find runs/sweep whether Jupyter starts in the root or in notebooks/."""
  path = os.fspath(path)
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(REPO_ROOT, path)


def load_sweep_table(sweep_dir: str | os.PathLike) -> pd.DataFrame:
  """The sweep's summary.csv (columns: sweep_table.COLUMNS; rank empty for dense) plus
  `series`: the kind, `_untied` appended for an untied head (one curve per series). An
  older summary.csv gets its head and method columns filled in, and lacks the rest."""
  path = os.path.join(sweep_dir, sweep_table.CSV_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: run the sweep first (python train.py '
        f'--config=configs/rank_sweep.py --workdir={sweep_dir}), or set FACTORIZED_SWEEP_DIR.')
  table = sweep_table.with_bytes(sweep_table.with_methods(sweep_table.with_heads(
      pd.read_csv(path))))
  ints = {c: t for c, t in sweep_table.INT_COLUMNS.items() if c in table.columns}
  return sweep_table.with_series(table.astype(ints))


def trained_points(table: pd.DataFrame) -> pd.DataFrame:
  """The rows of runs trained from scratch (not the post-hoc rows of a dense run, nor its
  fine-tuned control `dense_ft<N>`)."""
  return table[table['method'] == sweep_table.TRAINED]


def load_posthoc_svd(sweep_dir: str | os.PathLike) -> pd.DataFrame:
  """Post-hoc compression of dense runs (<method>_<split>.json, eval.py --svd_ranks):
  columns run, method (posthoc_svd, posthoc_svd_freq, ...), split, rank, finetune_steps (0:
  no fine-tuning), ppl, dense_ppl; empty when no dense run was compressed."""
  rows = []
  for path in sweep_table.posthoc_files(sweep_dir, recursive=True):
    record = json.loads(path.read_text())
    run = os.path.relpath(path.parent, sweep_dir)
    method = record.get('method', sweep_table.POSTHOC_METHOD)
    series = [(0, record['ppl_by_rank'])]
    if record.get('finetuned_ppl_by_rank'):
      series.append((int(record['finetune_steps']), record['finetuned_ppl_by_rank']))
    rows.extend((run, method, record['split'], int(rank), steps, float(ppl),
                 float(record['dense_ppl']))
                for steps, ppl_by_rank in series for rank, ppl in ppl_by_rank.items())
  table = pd.DataFrame(rows, columns=['run', 'method', 'split', 'rank', 'finetune_steps', 'ppl',
                                      'dense_ppl'])
  return table.sort_values(['run', 'method', 'split', 'finetune_steps', 'rank'],
                           kind='stable').reset_index(drop=True)


@dataclasses.dataclass
class TrainedEmbedding:
  """A trained input embedding: its factors (product = the VxD table) and how to read it."""

  name: str
  kind: str
  rank: int  # model.embed.rank (what it means: see the kind), 0 for dense
  step: int
  factors: list[np.ndarray]
  tokenizer: tokenizer_lib.Tokenizer
  token_counts_V: np.ndarray  # occurrences of each token in the train split

  @property
  def vocab_size(self) -> int:
    """V."""
    return self.factors[0].shape[0]

  @property
  def model_dim(self) -> int:
    """D."""
    return self.factors[-1].shape[1]

  def singular_values(self) -> np.ndarray:
    """The table's singular values, descending (spectrum.singular_values on the factors)."""
    return np.asarray(spectrum.singular_values(self.factors), np.float64)

  @functools.cached_property
  def svd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD (U_VxK, s_K, Vt_KxD) of the table, from its factors, float64."""
    return tuple(np.asarray(a) for a in spectrum.factored_svd(self.factors))


def load_embedding(workdir: str | os.PathLike, checkpoint: str = 'latest',
                   name: str | None = None) -> TrainedEmbedding:
  """The input embedding of the run in `workdir` at `checkpoint` (latest | best | a step);
  'latest' is what eval.py --svd_ranks compresses, 'best' what summary.json's test ppl uses.

  Needs only the run directory (config.json, tokenizer.json, train_counts.npy and the
  checkpoint), not the corpus; a run from before train_counts.npy rebuilds its corpus."""
  workdir = os.fspath(workdir)
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes on read-only managers
  try:
    if (pathlib.Path(workdir) / data_lib.TRAIN_COUNTS_FILE).exists():
      model, step = eval_run.restore_model(workdir, checkpoint)
      tokenizer, _ = tokenizer_lib.load_tokenizer(
          pathlib.Path(workdir) / data_lib.TOKENIZER_FILE)
      config, counts = build.load_saved(workdir), data_lib.load_train_counts(workdir)
    else:
      run, step = eval_run.restore_run(workdir, checkpoint,
                                       mesh=parallel.make_mesh(jax.devices()[:1]))
      model, tokenizer, config = run.model(), run.corpus.tokenizer, run.config
      counts = data_lib.token_counts(run.corpus.splits['train'], run.corpus.vocab_size)
  finally:
    absl_logging.set_verbosity(verbosity)
  factors = [np.asarray(f, np.float64) for f in jax.device_get(model.embed.factors())]
  embed = config.model.embed
  return TrainedEmbedding(
      name=name or os.path.basename(os.path.normpath(workdir)), kind=embed.kind,
      rank=int(embed.rank) if embeddings.ranked(embed.kind) else 0, step=step, factors=factors,
      tokenizer=tokenizer, token_counts_V=counts)
