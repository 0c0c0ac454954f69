r"""A sweep directory's reports, rebuilt from its runs' summaries every time.

A sweep directory is one TensorBoard logdir whose runs are the points (each carries its
hyper-parameters: the HParams dashboard shows hparams/valid_ppl and hparams/test_ppl
against kind, rank, seed and parameter counts). `write_reports(sweep_dir)` reads every
`<run>/summary.json` and `<run>/<method>_<split>.json` (post-hoc compression: posthoc_svd,
posthoc_svd_freq, ...) directly below `sweep_dir` and (re)writes:

  summary.csv        one row per run (COLUMNS): kind, head, rank, seed, embedding, vocab
                     and total parameters (costs.py: `vocab` = every parameter the
                     embedding choice adds, the budget kinds are compared on), valid ppl
                     (the last evaluation, as in HParams), test ppl (the best checkpoint by
                     valid ppl), tokens/s, then test ppl per frequency band
                     (`test_ppl@<band>`); plus rows of kind <method> (posthoc_svd,
                     posthoc_svd_freq, ...; `<method>_ft<N>` and `dense_ft<N>` after N
                     fine-tuning steps) per rank for a dense run compressed by eval.py
                     --svd_ranks; rows sorted by head, kind (embeddings.KINDS order, post-hoc
                     last), rank and seed;
  aggregate.csv      one row per (kind, head, rank) over seeds: `seeds` (the count), the
                     parameter counts, and mean and sample standard deviation (empty for one
                     seed) of valid, test and band perplexities;
  summary.md         the aggregate table; every point by vocabulary parameters (all kinds on
                     one axis, whatever their rank means, with the Pareto front marked);
                     then the per-run table;
  ppl_vs_vocab_params.png (with the Pareto front), ppl_vs_rank.png,
                     band_ppl_vs_vocab_params.png (plots.py; error bars = standard
                     deviation over seeds);
  sweep/             a TensorBoard run of scalars for the Scalars tab (means over seeds):
                     ppl_vs_rank/<series> (test ppl, step = rank),
                     valid_ppl_vs_rank/<series>, ppl_vs_vocab_params/<series> and
                     valid_ppl_vs_vocab_params/<series> (step = vocab params). <series> is
                     the kind, `_untied` appended for untied heads; a dense run is drawn at
                     step = min(V, D) (its table's full rank).

Rerunning rewrites all of them (the `sweep` run's old event files are deleted first), so
they always describe the directory as it is. `python -m factorized.sweep_report DIR`
rewrites them from the summaries alone (no checkpoint, corpus or event file needed).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from typing import Any

import numpy as np
import pandas as pd

from factorized import embeddings, metrics

SWEEP_RUN = 'sweep'
CSV_FILE, AGGREGATE_FILE, MD_FILE = 'summary.csv', 'aggregate.csv', 'summary.md'
PNG_FILE = 'ppl_vs_vocab_params.png'
PNG_FILES = (PNG_FILE, 'ppl_vs_rank.png', 'band_ppl_vs_vocab_params.png')
TUNING_PNG_FILE = 'valid_ppl_vs_lr.png'  # written when train.lr is swept
POSTHOC_METHOD = 'posthoc_svd'  # every post-hoc method's name starts so (posthoc.py)
POSTHOC_FILE = '{method}_{split}.json'
COLUMNS = ('run', 'kind', 'head', 'rank', 'seed', 'embedding_params', 'vocab_params',
           'total_params', 'valid_ppl', 'best_valid_ppl', 'test_ppl', 'tokens_per_s')
# Config fields that never make a swept column: what COLUMNS already say, and fields that
# do not change what is computed.
NOT_SWEPT = ('seed', 'overwrite', 'model.embed.kind', 'model.embed.rank', 'model.embed.head',
             'data.cache_dir', 'launcher.')
TUNED = 'lr'  # the swept column the tuned rows choose (train.lr)
GROUP = ('kind', 'head', 'rank')
PARAMS = ('embedding_params', 'vocab_params', 'total_params')
BAND_PREFIX = 'test_ppl@'
# Row order: each kind with what derives from it (dense_ft<N> after dense), post-hoc last.
_KIND_ORDER = (*embeddings.KINDS, POSTHOC_METHOD)


def _run_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in sweep_dir.iterdir()
                if p.is_dir() and p.name != SWEEP_RUN and not p.name.startswith('.'))


def _summary_row(run: str, summary: dict) -> dict[str, Any]:
  config, params = summary['config'], summary['params']
  embed = config['model']['embed']
  kind = embed['kind']
  row = {
      'run': run, 'kind': kind, 'head': embed['head'],
      'rank': int(embed['rank']) if embeddings.ranked(kind) else None,
      'seed': config.get('seed'),
      'embedding_params': params['embedding'],
      'vocab_params': params.get('vocab', params['embedding'] + params['output_head']),
      'total_params': params['total'],
      'valid_ppl': summary.get('valid_ppl'), 'best_valid_ppl': summary.get('best_valid_ppl'),
      'test_ppl': summary.get('test_ppl'), 'tokens_per_s': summary.get('tokens_per_s'),
  }
  for column in metric_extras():
    if column in summary:
      row[column] = summary[column]
  for band, result in (summary.get('test_bands') or {}).items():
    row[BAND_PREFIX + band] = result['ppl']
  return row


def metric_extras() -> list[str]:
  """summary.json's test numbers of the metrics beyond loss and ppl (test_accuracy, ...):
  columns of summary.csv and, over seeds, of aggregate.csv."""
  return [f'test_{name}' for name in metrics.reported_names() if name not in ('loss', 'ppl')]


def posthoc_files(directory: str | os.PathLike, *, recursive: bool = False
                  ) -> list[pathlib.Path]:
  """The post-hoc result files (<method>_<split>.json) in `directory` (or below it)."""
  pattern = f'{POSTHOC_METHOD}*_*.json'
  directory = pathlib.Path(directory)
  return sorted(directory.rglob(pattern) if recursive else directory.glob(pattern))


def _posthoc_rows(run: str, run_dir: pathlib.Path, seed: int | None) -> list[dict[str, Any]]:
  rows: dict[tuple, dict] = {}  # one row per (kind, rank): its valid and test ppl
  for path in posthoc_files(run_dir):
    result = json.loads(path.read_text())
    split, method = result['split'], result.get('method', POSTHOC_METHOD)
    series = [(method, result['ppl_by_rank'], result['params_by_rank'])]
    if result.get('finetuned_ppl_by_rank'):
      steps = result['finetune_steps']
      series.append((f'{method}_ft{steps}', result['finetuned_ppl_by_rank'],
                     result['params_by_rank']))
      if 'dense_finetuned_ppl' in result:
        series.append((f'dense_ft{steps}', {None: result['dense_finetuned_ppl']},
                       {None: result['dense_params']}))
    for kind, ppl_by_rank, params_by_rank in series:
      for rank, ppl in ppl_by_rank.items():
        params = params_by_rank[rank]
        row = rows.setdefault((kind, rank), {
            'run': run, 'kind': kind, 'head': result['head'],
            'rank': None if rank is None else int(rank), 'seed': seed,
            'embedding_params': params['embedding'],
            'vocab_params': params.get('vocab', params['embedding']),
            'total_params': params['total'],
            'valid_ppl': None, 'best_valid_ppl': None, 'test_ppl': None,
            'tokens_per_s': None})
        row[f'{split}_ppl'] = ppl
        if split == 'valid':  # one evaluation: the last is the best
          row['best_valid_ppl'] = ppl
  return list(rows.values())


def _sort_key(row: dict) -> tuple:
  """(head, kind order, kind, rank, seed, run); a derived kind (dense_ft30, posthoc_svd_freq)
  goes with the longest kind name it starts with."""
  kind = row['kind']
  base = next((k for k in sorted(_KIND_ORDER, key=len, reverse=True) if kind.startswith(k)),
              kind)
  order = _KIND_ORDER.index(base) if base in _KIND_ORDER else len(_KIND_ORDER)
  return (row['head'] != 'tied', order, kind, row['rank'] or 0,
          -1 if row['seed'] is None else row['seed'], row['run'])


def _flat(config: dict, prefix: str = '') -> dict[str, Any]:
  """A saved config as {dotted field: value} (tuples and lists as tuples)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
  return flat


def swept_fields(configs: list[dict]) -> dict[str, str]:
  """{dotted field: column name} of the config fields whose values differ between the
  runs (a sweep's axes: train.lr -> 'lr'), among those every run's config has (a field
  added to the code later is no axis), NOT_SWEPT aside."""
  flats = [_flat(config) for config in configs]
  common = set.intersection(*(set(flat) for flat in flats)) if flats else set()
  fields = sorted(field for field in common
                  if not any(field == skip or field.startswith(skip) for skip in NOT_SWEPT)
                  and len({repr(flat[field]) for flat in flats}) > 1)
  names = [field.rsplit('.', 1)[-1] for field in fields]
  return {field: name if names.count(name) == 1 else field
          for field, name in zip(fields, names, strict=True)}


def collect_rows(sweep_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
  """The per-run rows (sorted by head, kind, rank, seed) and the runs without a summary.
  Each row carries the values of the swept fields (`swept_fields`) of its run's config;
  post-hoc rows those of the run they compress."""
  runs, unfinished = [], []
  for run_dir in _run_dirs(pathlib.Path(sweep_dir)):
    summary_path = run_dir / 'summary.json'
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is None and (run_dir / 'config.json').exists():
      unfinished.append(run_dir.name)
    runs.append((run_dir, summary))
  swept = swept_fields([summary['config'] for _, summary in runs if summary])
  rows = []
  for run_dir, summary in runs:
    values, seed = {}, None
    if summary:
      rows.append(_summary_row(run_dir.name, summary))
      seed = rows[-1]['seed']
      flat = _flat(summary['config'])
      values = {name: flat[field] for field, name in swept.items()}
      rows[-1].update(values)
    rows.extend({**row, **values} for row in _posthoc_rows(run_dir.name, run_dir, seed))
  return sorted(rows, key=_sort_key), unfinished


def _band_order(column: str) -> float:
  """'test_ppl@101-1000' -> 101, 'test_ppl@10001+' -> 10001, '<unk>' last."""
  first = column.removeprefix(BAND_PREFIX).split('-')[0].rstrip('+')
  return int(first) if first.isdigit() else math.inf


def rows_table(rows: list[dict]) -> pd.DataFrame:
  """The per-run rows as summary.csv's frame: COLUMNS, the swept fields' columns, then band
  columns; `series` added."""
  bands = sorted({c for row in rows for c in row if c.startswith(BAND_PREFIX)}, key=_band_order)
  extras = [c for c in metric_extras() if any(c in row for row in rows)]
  swept = [c for row in rows for c in row
           if c not in COLUMNS and c not in extras and not c.startswith(BAND_PREFIX)]
  table = pd.DataFrame(rows, columns=[*COLUMNS, *dict.fromkeys(swept), *extras, *bands])
  return with_series(table.astype({'rank': 'Int64', 'seed': 'Int64'}))


def swept_columns(table: pd.DataFrame) -> list[str]:
  """The swept fields' columns of a per-run or aggregate table (rows_table)."""
  known = {*COLUMNS, *metric_extras(), 'series', 'seeds'}
  return [c for c in table.columns if c not in known and not c.startswith(BAND_PREFIX)
          and not c.endswith(('_mean', '_std'))]


def base_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The rows at every swept field's most common value (the grid's own settings: what the
  plots and the by-vocab-params table show; the tuned rows show the rest)."""
  keep = pd.Series(True, index=table.index)
  for column in swept_columns(table):
    values = table[column].map(repr)
    keep &= values == values.mode().iloc[0]
  return table[keep]


def tuned(table: pd.DataFrame) -> pd.DataFrame:
  """The tuned rows: per (kind, head, rank, other swept fields) trained with several values
  of TUNED (train.lr), the value of lowest best-valid perplexity (mean over seeds) and its
  test perplexity; `tried` lists the values, `at_edge` says whether the best is the lowest
  or highest tried (then the range should widen). The test split chooses nothing."""
  columns = ['kind', 'head', 'rank', TUNED, 'tried', 'at_edge', 'seeds', 'vocab_params',
             'best_valid_ppl_mean', 'test_ppl_mean', 'test_ppl_std', 'series']
  groups = aggregate(table[table['kind'].isin(embeddings.KINDS)])
  if TUNED not in groups.columns:
    return pd.DataFrame(columns=columns)
  keys = [*GROUP, *[c for c in swept_columns(groups) if c != TUNED]]
  rows = []
  for _, points in groups.groupby(keys, dropna=False, sort=False):
    points = points[np.isfinite(points['best_valid_ppl_mean'].astype(float))]
    if len(points) < 2:
      continue
    best = points.loc[points['best_valid_ppl_mean'].astype(float).idxmin()]
    tried = sorted(points[TUNED])
    rows.append({**best.to_dict(), 'tried': '+'.join(f'{v:g}' for v in tried),
                 'at_edge': best[TUNED] in (tried[0], tried[-1])})
  return pd.DataFrame(rows, columns=[*columns, *(c for c in keys if c not in columns)])


def with_series(table: pd.DataFrame) -> pd.DataFrame:
  """`table` plus `series`: its kind, `_untied` appended for an untied head (one curve each)."""
  table = table.copy()
  table['series'] = table['kind'] + np.where(table['head'] == 'untied', '_untied', '')
  return table


def metric_columns(table: pd.DataFrame) -> list[str]:
  """The perplexity columns of a per-run table: valid, best valid, test, then the bands'."""
  return ['valid_ppl', 'best_valid_ppl', 'test_ppl',
          *[c for c in metric_extras() if c in table.columns],
          *[c for c in table.columns if c.startswith(BAND_PREFIX)]]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
  """One row per (kind, head, rank, swept fields) of a per-run table: `seeds`, parameter
  counts, and `<metric>_mean` / `<metric>_std` (sample std over seeds; NaN for one seed)."""
  metrics = metric_columns(table)
  keys = [*GROUP, *swept_columns(table)]
  groups = table.groupby(keys, dropna=False, sort=False)
  out = groups[list(PARAMS)].first()
  out.insert(0, 'seeds', groups.size())
  numeric = table[keys + metrics].astype({m: float for m in metrics})
  stats = numeric.groupby(keys, dropna=False, sort=False)[metrics].agg(['mean', 'std'])
  stats.columns = [f'{metric}_{stat}' for metric, stat in stats.columns]
  return with_series(out.join(stats).reset_index())


def _is_number(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def _format(column: str, value) -> str:
  if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
    return '-'
  if column in PARAMS:
    return f'{int(value):,}'
  if 'ppl' in column:
    return f'{value:.2f}' if _is_number(value) else str(value)
  if column == 'tokens_per_s':
    return f'{value:,.0f}'
  return str(value)


def _markdown(table: pd.DataFrame, columns: list[str]) -> list[str]:
  lines = ['| ' + ' | '.join(c.replace('_', ' ') for c in columns) + ' |',
           '|' + '---|' * len(columns)]
  for _, row in table.iterrows():
    lines.append('| ' + ' | '.join(_format(c, row[c]) for c in columns) + ' |')
  return lines


def _mean_std(row: pd.Series, metric: str) -> str:
  mean, std = row[f'{metric}_mean'], row[f'{metric}_std']
  if not _is_number(mean):
    return '-'
  return f'{mean:.2f} ± {std:.2f}' if _is_number(std) else f'{mean:.2f}'


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
  """The rows no other row beats on both `x` and `y` (lower is better), sorted by `x`."""
  ordered = table.dropna(subset=[x, y]).sort_values([x, y], kind='stable')
  best, keep = np.inf, []
  for index, value in ordered[y].items():
    if value < best:
      best = value
      keep.append(index)
  return ordered.loc[keep]


def _by_vocab_params(groups: pd.DataFrame) -> list[str]:
  """Every (kind, head, rank) by vocab parameters, test ppl mean ± std, Pareto front marked."""
  points = groups.astype({'test_ppl_mean': float}).sort_values('vocab_params', kind='stable')
  front = set(pareto_front(points, 'vocab_params', 'test_ppl_mean').index)
  lines = ['| vocab params | kind | head | rank | test ppl | Pareto front |',
           '|---|---|---|---|---|---|']
  for index, row in points.iterrows():
    lines.append(f'| {_format("vocab_params", row["vocab_params"])} | {row["kind"]} | '
                 f'{row["head"]} | {_format("rank", row["rank"])} | '
                 f'{_mean_std(row, "test_ppl")} | {"yes" if index in front else ""} |')
  return lines


def markdown_report(table: pd.DataFrame, unfinished: list[str]) -> str:
  """summary.md: the aggregate over seeds (mean ± std), every point by vocab parameters,
  then every run."""
  groups = aggregate(table)
  bands = [c for c in metric_columns(table) if c.startswith(BAND_PREFIX)]
  swept = swept_columns(groups)
  header = ['kind', 'head', 'rank', *swept, 'seeds', 'vocab params', 'total params',
            'valid ppl', 'test ppl', *[b.replace(BAND_PREFIX, 'test ppl ') for b in bands]]
  lines = ['Mean ± standard deviation over seeds:', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for _, row in groups.iterrows():
    cells = [row['kind'], row['head'], _format('rank', row['rank']),
             *[_format(c, row[c]) for c in swept], str(row['seeds']),
             _format('vocab_params', row['vocab_params']),
             _format('total_params', row['total_params']),
             *[_mean_std(row, m) for m in ('valid_ppl', 'test_ppl', *bands)]]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'By vocabulary parameters (every kind on one axis; the Pareto front: no point '
            'is both smaller and better):', '', *_by_vocab_params(aggregate(base_rows(table)))]
  chosen = tuned(table)
  if not chosen.empty:
    lines += ['', f'Tuned {TUNED} (per kind, head and rank: the value of lowest best-valid '
              'perplexity, mean over seeds; the test split chooses nothing):', '',
              f'| kind | head | rank | {TUNED} | tried | at an edge | best valid ppl | '
              'test ppl |', '|---|---|---|---|---|---|---|---|']
    for _, row in chosen.iterrows():
      lines.append(f'| {row["kind"]} | {row["head"]} | {_format("rank", row["rank"])} | '
                   f'{row[TUNED]:g} | {row["tried"]} | {"yes" if row["at_edge"] else ""} | '
                   f'{row["best_valid_ppl_mean"]:.2f} | {_mean_std(row, "test_ppl")} |')
  lines += ['', 'Every run:', '', *_markdown(table, [*COLUMNS, *swept_columns(table)])]
  if unfinished:
    lines += ['', f'Not finished (no summary.json yet): {", ".join(unfinished)}.']
  return '\n'.join(lines) + '\n'


def _csv(table: pd.DataFrame) -> str:
  return table.to_csv(index=False, lineterminator='\n')


def write_tensorboard_run(groups: pd.DataFrame, sweep_dir: str | os.PathLike,
                          full_rank: int | None) -> None:
  """Rewrites the `sweep` run: ppl_vs_rank/* and ppl_vs_vocab_params/* scalars (seed means)."""
  from tensorboardX import SummaryWriter

  run_dir = pathlib.Path(sweep_dir) / SWEEP_RUN
  run_dir.mkdir(exist_ok=True)
  for old in run_dir.glob('events.out.tfevents*'):
    old.unlink()
  groups = groups.copy()
  if full_rank is not None:  # dense runs (no rank) at their table's full rank
    groups['rank'] = groups['rank'].fillna(full_rank)
  writer = SummaryWriter(logdir=str(run_dir))
  try:
    for series, points in groups.groupby('series', sort=True):
      for axis, step_key in (('rank', 'rank'), ('vocab_params', 'vocab_params')):
        for prefix, metric in (('', 'test_ppl_mean'), ('valid_', 'valid_ppl_mean')):
          for _, row in points.dropna(subset=[step_key]).sort_values(step_key).iterrows():
            if _is_number(row[metric]):
              writer.add_scalar(f'{prefix}ppl_vs_{axis}/{series}', row[metric],
                                global_step=int(row[step_key]))
  finally:
    writer.close()


def _full_rank(sweep_dir: pathlib.Path) -> int | None:
  for run_dir in _run_dirs(sweep_dir):
    path = run_dir / 'summary.json'
    if path.exists():
      summary = json.loads(path.read_text())
      return min(summary['vocab_size'], summary['config']['model']['model_dim'])
  return None


def write_reports(sweep_dir: str | os.PathLike) -> str:
  """(Re)writes summary.csv, aggregate.csv, summary.md, the plots and the `sweep` run;
  returns the Markdown report."""
  from factorized import plots
  from factorized.workdir import write_atomic

  root = pathlib.Path(sweep_dir)
  rows, unfinished = collect_rows(root)
  table = rows_table(rows)
  report = markdown_report(table, unfinished)
  write_atomic(root / CSV_FILE, _csv(table.drop(columns='series')))
  write_atomic(root / AGGREGATE_FILE, _csv(aggregate(table).drop(columns='series')))
  write_atomic(root / MD_FILE, report)
  base = base_rows(table)
  figures = (plots.plot_ppl(base, 'vocab_params'), plots.plot_ppl(base, 'rank'),
             plots.plot_band_ppl(base, 'vocab_params'))
  for name, figure in zip(PNG_FILES, figures, strict=True):
    write_atomic(root / name, plots.png_bytes(figure))
  if not tuned(table).empty:
    write_atomic(root / TUNING_PNG_FILE, plots.png_bytes(plots.plot_tuning(table, TUNED)))
  write_tensorboard_run(aggregate(base), root, _full_rank(root))
  return report


def refresh_parent_reports(workdir: str | os.PathLike) -> str | None:
  """Rewrites the reports of the sweep that `workdir` belongs to (its parent holds
  summary.csv); returns the parent's path, or None when it is not a sweep directory."""
  parent = pathlib.Path(workdir).resolve().parent
  if not (parent / CSV_FILE).exists():
    return None
  write_reports(parent)
  return str(parent)


if __name__ == '__main__':
  if len(sys.argv) != 2 or not pathlib.Path(sys.argv[1]).is_dir():
    sys.exit('usage: python -m factorized.sweep_report SWEEP_DIR  (rewrites its reports from '
             'the summaries alone)')
  print(write_reports(sys.argv[1]))
