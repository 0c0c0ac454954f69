r"""Reading finished runs and sweeps into pandas, and the spectral and interpretation helpers
that notebooks/ call (plots.py draws what these return).

Shapes: V vocabulary, D model width, K the number of singular values (min(V, D), or the
inner width of a factorization), R a truncation rank.

Loading: load_scalars, scalar_series, final_scalars (TensorBoard events, read with
tensorboard's own EventAccumulator: the numbers TensorBoard shows); load_summary;
load_sweep_table, trained_points (summary.csv); load_posthoc_svd (eval.py --svd_ranks);
load_embedding (a trained input embedding: factors, tokenizer, train token counts).
Spectra: factored_svd, spectrum_table, reconstruction_error, svd_parameter_cost,
truncation_table; pareto_front. Interpretation: frequent_words, top_tokens,
nearest_neighbours, rank_vectors, neighbours_table, neighbour_overlap.

Spectra, from an embedding's factors (embeddings.py `factors()`); the VxD table of a
factorized kind is never formed. W = U diag(s) Vt (thin SVD), W_R its rank-R truncation:
  Eckart-Young   |W - W_R|_F^2 = sum_{i>R} s_i^2, the smallest error of any rank-R matrix;
  neighbours     rows of W_R are rows of U_R diag(s_R) times Vt_R, whose rows are
                 orthonormal, so cosine similarities under W_R are those of U_R diag(s_R).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import pandas as pd
from absl import logging as absl_logging
from jax.typing import ArrayLike
from tensorboard.backend.event_processing import event_accumulator

from factorized import eval_run, parallel, spectrum, sweep_report
from factorized import summary as summary_lib
from factorized import tokenizer as tokenizer_lib

ENERGY_FRACTIONS = (0.9, 0.99)
SCALAR_COLUMNS = ('run', 'tag', 'step', 'value', 'wall_time')
POSTHOC_FILE = sweep_report.POSTHOC_FILE
POSTHOC_KIND = 'posthoc_svd'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- loading


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
  """A finished run's summary.json (see summary.py)."""
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
  """The sweep's summary.csv (columns: sweep_report.COLUMNS; rank empty for dense) plus
  `series`: the kind, `_untied` appended for an untied head (one curve per series)."""
  path = os.path.join(sweep_dir, sweep_report.CSV_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: run the sweep first (python train.py '
        f'--config=configs/rank_sweep.py --workdir={sweep_dir}), or set FACTORIZED_SWEEP_DIR.')
  return sweep_report.with_series(pd.read_csv(path).astype({'rank': 'Int64', 'seed': 'Int64'}))


def trained_points(table: pd.DataFrame) -> pd.DataFrame:
  """The rows of runs trained from scratch (not the post-hoc SVD rows of a dense run, nor its
  fine-tuned control `dense_ft<N>`)."""
  return table[~table['kind'].str.startswith((POSTHOC_KIND, 'dense_ft'))]


def load_posthoc_svd(sweep_dir: str | os.PathLike) -> pd.DataFrame:
  """Post-hoc truncated SVD of dense runs (posthoc_svd_<split>.json, eval.py --svd_ranks):
  columns run, split, rank, finetune_steps (0: no fine-tuning), ppl, dense_ppl; empty when
  no dense run was compressed."""
  rows = []
  pattern = os.path.join(glob.escape(os.fspath(sweep_dir)), '**', POSTHOC_FILE.format(split='*'))
  for path in sorted(glob.glob(pattern, recursive=True)):
    with open(path) as f:
      record = json.load(f)
    run = os.path.relpath(os.path.dirname(path), sweep_dir)
    series = [(0, record['ppl_by_rank'])]
    if record.get('finetuned_ppl_by_rank'):
      series.append((int(record['finetune_steps']), record['finetuned_ppl_by_rank']))
    rows.extend((run, record['split'], int(rank), steps, float(ppl), float(record['dense_ppl']))
                for steps, ppl_by_rank in series for rank, ppl in ppl_by_rank.items())
  table = pd.DataFrame(rows, columns=['run', 'split', 'rank', 'finetune_steps', 'ppl',
                                      'dense_ppl'])
  return table.sort_values(['run', 'split', 'finetune_steps', 'rank'],
                           kind='stable').reset_index(drop=True)


@dataclasses.dataclass
class TrainedEmbedding:
  """A trained input embedding: its factors (product = the VxD table) and how to read it."""

  name: str
  kind: str
  rank: int  # E for albert, R for svd, 0 for dense
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
    """The thin SVD (U_VxK, s_K, Vt_KxD) of the table, from its factors (factored_svd)."""
    return factored_svd(self.factors)


def load_embedding(workdir: str | os.PathLike, checkpoint: str = 'latest',
                   name: str | None = None) -> TrainedEmbedding:
  """The input embedding of the run in `workdir` at `checkpoint` (latest | best | a step);
  'latest' is what eval.py --svd_ranks compresses, 'best' what summary.json's test ppl uses."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes on read-only managers
  try:
    run, step = eval_run.restore_run(os.fspath(workdir), checkpoint, mesh=mesh)
  finally:
    absl_logging.set_verbosity(verbosity)
  factors = [np.asarray(f, np.float64) for f in jax.device_get(run.model().embed.factors())]
  embed = run.config.model.embed
  counts = np.bincount(run.corpus.splits['train'], minlength=run.corpus.vocab_size)
  return TrainedEmbedding(
      name=name or os.path.basename(os.path.normpath(workdir)), kind=embed.kind,
      rank=0 if embed.kind == 'dense' else int(embed.rank), step=step, factors=factors,
      tokenizer=run.corpus.tokenizer, token_counts_V=counts)


# ---------------------------------------------------------------------------- spectra


def factored_svd(factors: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Thin SVD (U_VxK, s_K, Vt_KxD) of factors[0] @ ... @ factors[-1] without forming it.

  As in spectrum.py: F_1 = Q_1 R_1, F_n^T = Q_n R_n, and the small core
  C = R_1 F_2 ... R_n^T = Uc diag(s) Vct gives U = Q_1 Uc, Vt = Vct Q_n^T. Each column of
  U is signed so that its largest-magnitude entry is positive (a deterministic choice).
  """
  factors = [np.asarray(f, np.float64) for f in factors]
  if not factors:
    raise ValueError('factored_svd needs at least one factor, got none.')
  if len(factors) == 1:
    u_VxK, s_K, vt_KxD = np.linalg.svd(factors[0], full_matrices=False)
  else:
    q_first, r_first = np.linalg.qr(factors[0])
    q_last, r_last = np.linalg.qr(factors[-1].T)
    core = r_first
    for middle in factors[1:-1]:
      core = core @ middle
    u_core, s_K, vt_core = np.linalg.svd(core @ r_last.T, full_matrices=False)
    u_VxK, vt_KxD = q_first @ u_core, vt_core @ q_last.T
  signs_K = np.sign(u_VxK[np.argmax(np.abs(u_VxK), axis=0), np.arange(u_VxK.shape[1])])
  signs_K[signs_K == 0] = 1.0
  return u_VxK * signs_K, s_K, vt_KxD * signs_K[:, None]


def energy_column(fraction: float) -> str:
  """spectrum_table's column of the rank holding `fraction` of the energy: 'rank_90' etc."""
  return f'rank_{100 * fraction:g}'


def spectrum_table(singular_values_by_name: Mapping[str, ArrayLike],
                   fractions: Sequence[float] = ENERGY_FRACTIONS) -> pd.DataFrame:
  """One row per embedding: number of singular values, largest one, stable rank, entropy
  effective rank, and (columns energy_column(f)) the rank holding each of `fractions` of the
  energy sum s^2."""
  rows = {}
  for name, sv in singular_values_by_name.items():
    sv = np.asarray(sv, np.float64)
    row = {'singular_values': sv.size, 'sigma_max': float(sv.max()),
           'stable_rank': spectrum.stable_rank(sv),
           'entropy_effective_rank': spectrum.entropy_effective_rank(sv)}
    row.update({energy_column(fraction): spectrum.rank_for_energy(sv, fraction)
                for fraction in fractions})
    rows[name] = row
  return pd.DataFrame.from_dict(rows, orient='index')


def reconstruction_error(singular_values: ArrayLike,
                         ranks: Sequence[int] | None = None) -> np.ndarray:
  """|W - W_R|_F / |W|_F of the best rank-R approximation, for each R in `ranks` (default
  0..K), from the singular values alone (Eckart-Young: sqrt(sum_{i>R} s_i^2 / sum s_i^2))."""
  sv = np.sort(np.asarray(singular_values, np.float64))[::-1]
  tail_energy = np.concatenate([np.cumsum((sv**2)[::-1])[::-1], [0.0]])  # index R: sum_{i>R}
  ranks = np.arange(sv.size + 1) if ranks is None else np.asarray(ranks)
  if np.any(ranks < 0) or np.any(ranks > sv.size):
    raise ValueError(f'ranks {list(ranks)} must lie in [0, {sv.size}] (the number of '
                     'singular values).')
  total = tail_energy[0]
  return np.sqrt(tail_energy[ranks] / total) if total > 0 else np.zeros(len(ranks))


def svd_parameter_cost(vocab_size: int, model_dim: int, ranks: Sequence[int]) -> pd.DataFrame:
  """Parameters of a rank-R SVD embedding, R (V + D + 1) (U, s and V as costs.py counts
  them), against V D for the dense table: columns rank, svd_params, dense_params, fraction."""
  ranks = np.asarray(ranks, np.int64)
  svd = ranks * (vocab_size + model_dim + 1)
  dense = vocab_size * model_dim
  return pd.DataFrame({'rank': ranks, 'svd_params': svd, 'dense_params': dense,
                       'fraction': svd / dense})


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
  """The rows no other row beats on both `x` and `y` (lower is better), sorted by `x`."""
  ordered = table.dropna(subset=[x, y]).sort_values([x, y], kind='stable')
  best, keep = np.inf, []
  for index, value in ordered[y].items():
    if value < best:
      best = value
      keep.append(index)
  return ordered.loc[keep]


# ---------------------------------------------------------------------------- interpretation


def frequent_words(embedding: TrainedEmbedding, count: int = 6, skip: int = 0) -> list[str]:
  """The `count` most frequent alphabetic train tokens after the first `skip` of them
  (special tokens and punctuation are left out)."""
  tokenizer = embedding.tokenizer
  words = []
  for token_id in np.argsort(-embedding.token_counts_V, kind='stable'):
    token = tokenizer.id_to_token(int(token_id))
    if token not in tokenizer_lib.SPECIALS and any(c.isalpha() for c in token):
      words.append(token)
    if len(words) == skip + count:
      break
  return words[skip:]


def top_tokens(embedding: TrainedEmbedding, directions: int = 8, count: int = 8) -> pd.DataFrame:
  """For each of the top `directions` singular directions: its singular value and the `count`
  tokens with the largest |U| entries, as 'token (+0.123)' in order of |U|."""
  u_VxK, s_K, _ = embedding.svd
  rows = []
  for direction in range(min(directions, s_K.size)):
    column_V = u_VxK[:, direction]
    order = np.argsort(-np.abs(column_V), kind='stable')[:count]
    tokens = ', '.join(f'{embedding.tokenizer.id_to_token(int(i))} ({column_V[i]:+.3f})'
                       for i in order)
    rows.append({'direction': direction + 1, 'singular_value': s_K[direction],
                 'tokens': tokens})
  return pd.DataFrame(rows).set_index('direction')


def nearest_neighbours(vectors_VxK: ArrayLike, query_ids: Sequence[int],
                       count: int = 8) -> list[list[tuple[int, float]]]:
  """For each query row: the `count` other rows of highest cosine similarity, as
  (id, similarity), most similar first."""
  vectors_VxK = np.asarray(vectors_VxK, np.float64)
  norms_V = np.linalg.norm(vectors_VxK, axis=1)
  unit_VxK = vectors_VxK / np.maximum(norms_V, 1e-30)[:, None]
  result = []
  for query in query_ids:
    similarity_V = unit_VxK @ unit_VxK[query]
    similarity_V[query] = -np.inf
    best = np.argsort(-similarity_V, kind='stable')[:count]
    result.append([(int(i), float(similarity_V[i])) for i in best])
  return result


def rank_vectors(embedding: TrainedEmbedding, rank: int | None) -> np.ndarray:
  """Rows of U_R diag(s_R) (VxR): cosine-equivalent to the rows of the rank-R truncation
  W_R; rank None keeps every singular value (the embedding itself)."""
  u_VxK, s_K, _ = embedding.svd
  rank = s_K.size if rank is None else rank
  if not 1 <= rank <= s_K.size:
    raise ValueError(f'rank={rank} must lie in [1, {s_K.size}] for {embedding.name}.')
  return u_VxK[:, :rank] * s_K[:rank]


def neighbours_table(embedding: TrainedEmbedding, words: Sequence[str],
                     ranks: Sequence[int | None] = (None,), count: int = 6) -> pd.DataFrame:
  """Nearest neighbours (cosine) of each word under the embedding (rank None: column 'full')
  and under its rank-R truncations (columns 'rank R'), most similar first."""
  ids = [embedding.tokenizer.token_to_id(word) for word in words]
  table = pd.DataFrame(index=pd.Index(list(words), name='word'))
  for rank in ranks:
    found = nearest_neighbours(rank_vectors(embedding, rank), ids, count)
    table['full' if rank is None else f'rank {rank}'] = [
        ', '.join(embedding.tokenizer.id_to_token(i) for i, _ in n) for n in found]
  return table


def neighbour_overlap(embedding: TrainedEmbedding, words: Sequence[str], ranks: Sequence[int],
                      count: int = 10) -> pd.DataFrame:
  """The fraction of each word's `count` nearest neighbours under the full embedding that
  its rank-R truncation keeps: rows rank, columns the words and their mean."""
  ids = [embedding.tokenizer.token_to_id(word) for word in words]
  full = [{i for i, _ in n} for n in nearest_neighbours(rank_vectors(embedding, None), ids,
                                                          count)]
  rows = {}
  for rank in ranks:
    found = nearest_neighbours(rank_vectors(embedding, rank), ids, count)
    rows[rank] = [len(f & {i for i, _ in n}) / count for f, n in zip(full, found, strict=True)]
  table = pd.DataFrame.from_dict(rows, orient='index', columns=list(words))
  table['mean'] = table.mean(axis=1)
  return table.rename_axis('rank')


def truncation_table(embedding: TrainedEmbedding, ranks: Sequence[int],
                     posthoc: pd.DataFrame | None = None, split: str = 'test') -> pd.DataFrame:
  """What truncating the table to each rank R keeps and costs: energy kept, relative error
  |W - W_R|_F / |W|_F, parameters R (V + D + 1) and their fraction of V D, and, from
  `posthoc` (load_posthoc_svd, this run, no fine-tuning), the perplexity on `split` and its
  increase over the untruncated model (NaN where R was not evaluated)."""
  sv = embedding.singular_values()
  ranks = sorted(int(r) for r in ranks)
  energy = spectrum.cumulative_energy(sv)
  table = svd_parameter_cost(embedding.vocab_size, embedding.model_dim, ranks)
  table.insert(1, 'energy', [energy[r - 1] for r in ranks])
  table.insert(2, 'relative_error', reconstruction_error(sv, ranks))
  table = table.set_index('rank')
  if posthoc is not None:
    rows = posthoc[(posthoc['run'] == embedding.name) & (posthoc['split'] == split)
                   & (posthoc['finetune_steps'] == 0)].set_index('rank')
    table[f'{split}_ppl'] = rows['ppl'].reindex(ranks)
    if not rows.empty:
      table['ppl_increase'] = table[f'{split}_ppl'] / rows['dense_ppl'].iloc[0] - 1
  return table
