"""A sweep's table: one row per run (and per post-hoc rank, and per post-training bit width),
read from the runs' summary.json and post-hoc JSON files, with its aggregate over seeds, its
Pareto front and its tuned rows. report.py writes it out; readers.py, plots.py and findings.py
read it.

Per-group columns, one per frequency group of the test targets (the groups partition them):
  test_ppl@<band>          perplexity on a frequency band (rank of the type in train frequency)
  test_class_ppl@<class>   on a frequency class (how often the type occurs in train), where
                           the summaries have classes (`test_classes`)
  test_share@<band>, test_class_share@<class>   the group's fraction of the test tokens
  test_frequent_ppl@rank1-10000   on the frequent bands pooled (every band but the open-ended
                           rarest one and <unk>)
  test_frequent_ppl@count11+      on the classes of at least eval.frequent_count train
                           occurrences (the run's config: 11 gives 11-100 and 101+)
"""

from __future__ import annotations

import copy
import json
import math
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from factorized import embeddings, metrics
from factorized.config import migrate as migrate_lib
from factorized.evaluation.posthoc import POSTHOC_METHOD
from factorized.evaluation.posthoc_quant import METHOD as POSTHOC_QUANT
from factorized.evaluation.posthoc_quant import QUANT_FILE

SWEEP_RUN = 'sweep'
CSV_FILE, AGGREGATE_FILE = 'summary.csv', 'aggregate.csv'
# method: how a row was made: `trained` from scratch, a post-hoc method (posthoc_svd, ...)
# applied to a trained dense run, or `finetuned` (that run trained further: the control);
# finetune_steps: the steps of fine-tuning after it (0: none); steps: the training steps
# behind the row (a post-hoc row: its parent's checkpoint step plus its fine-tuning);
# best_step: the step of best valid perplexity (a trained run's summary.json).
COLUMNS = ('run', 'kind', 'head', 'rank', 'shape', 'head_kind', 'head_rank', 'seed', 'method',
           'finetune_steps', 'steps', 'best_step', 'embedding_params', 'vocab_params',
           'total_params', 'vocab_bytes', 'valid_ppl', 'best_valid_ppl', 'test_ppl',
           'tokens_per_s')
TRAINED, FINETUNED = 'trained', 'finetuned'  # the methods that are no post-hoc compression
# quant_bits: a post-training quantization row's bit width (method POSTHOC_QUANT), and the
# column of model.embed.quant_bits where that is swept (QAT runs); empty or 0: float32.
QUANT_BITS = 'quant_bits'
# Config fields that never make a swept column: what COLUMNS already say (a kind's size
# fields: its shape), and fields that do not change what is computed.
# Config fields of where and how a run ran, never of what it computes.
MACHINE_ONLY = ('overwrite', 'data.cache_dir', 'launcher.')
NOT_SWEPT = ('seed', *MACHINE_ONLY, 'model.embed.kind', 'model.embed.rank', 'model.embed.head',
             'model.embed.head_kind', 'model.embed.head_rank',
             *(f'model.embed.{field}' for kind in embeddings.KINDS
               for field in embeddings.kind(kind).size_fields))
TUNED = 'lr'  # the swept column the tuning plot draws (train.lr); tuned() chooses over it
# A point: its input kind, rank and shape (its kind's size_fields that differ from their
# defaults, 'dpq_groups=32'; '' for none), and its head: tied (head_kind, head_rank = the
# input's), untied dense (head_kind dense, no rank) or untied of its own kind (head_kind,
# head_rank).
GROUP = ('kind', 'head', 'rank', 'shape', 'head_kind', 'head_rank')
# What a row's kind and method make of it (the same for every seed of a point).
DERIVATION = ('method', 'finetune_steps', 'steps')
PARAMS = ('embedding_params', 'vocab_params', 'total_params')
# ... and the bytes its vocabulary tables take as stored (summary.json `bytes.vocab`; float32
# tables, every point before quantization existed and every post-hoc SVD row: 4 per parameter).
SIZES = (*PARAMS, 'vocab_bytes')
FLOAT32_BYTES = 4
BAND_PREFIX = 'test_ppl@'
CLASS_PREFIX = 'test_class_ppl@'
SHARE_PREFIX = {BAND_PREFIX: 'test_share@', CLASS_PREFIX: 'test_class_share@'}
FREQUENT_PREFIX = 'test_frequent_ppl@'
GROUPINGS = {'test_bands': BAND_PREFIX, 'test_classes': CLASS_PREFIX}  # summary.json keys
GROUP_PREFIXES = (BAND_PREFIX, CLASS_PREFIX, *SHARE_PREFIX.values(), FREQUENT_PREFIX)
INT_COLUMNS = {'rank': 'Int64', 'head_rank': 'Int64', 'seed': 'Int64',
               'finetune_steps': 'Int64', 'steps': 'Int64', 'best_step': 'Int64'}
# Row order: each kind with what derives from it (dense_ft<N> after dense), post-hoc last.
_KIND_ORDER = (*embeddings.KINDS, POSTHOC_METHOD)


def run_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in sweep_dir.iterdir()
                if p.is_dir() and p.name != SWEEP_RUN and not p.name.startswith('.'))


def _head(embed: dict) -> tuple[str, int | None]:
  """(head kind, head rank): the input's own for a tied head, dense (no rank) for the untied
  DxV matrix, else model.embed.head_kind at head_rank (0: the input's rank)."""
  if embed['head'] == 'tied':
    kind = embed['kind']
    return kind, int(embed['rank']) if embeddings.ranked(kind) else None
  kind = embed['head_kind']
  if kind == 'dense' or not embeddings.ranked(kind):
    return kind, None
  return kind, int(embed['head_rank'] or embed['rank'])


def head_label(row) -> str:
  """'tied', 'untied' (the DxV matrix) or 'untied svd 16' (a head of its own kind)."""
  if row['head'] == 'tied' or row.get('head_kind', 'dense') in ('dense', None):
    return str(row['head'])
  rank = row.get('head_rank')
  return f'untied {row["head_kind"]}' + ('' if rank is None or pd.isna(rank) else f' {int(rank)}')


def _summary_row(run: str, summary: dict, config: dict) -> dict[str, Any]:
  """A trained run's row from its summary and its migrated config (_config)."""
  params = summary['params']
  embed = config['model']['embed']
  kind = embed['kind']
  head_kind, head_rank = _head(embed)
  row = {
      'run': run, 'kind': kind, 'head': embed['head'],
      'rank': int(embed['rank']) if embeddings.ranked(kind) else None, 'shape': shape(embed),
      'head_kind': head_kind, 'head_rank': head_rank,
      'seed': config.get('seed'), 'method': TRAINED, 'finetune_steps': 0,
      'steps': summary.get('steps'), 'best_step': summary.get('best_step'),
      'embedding_params': params['embedding'],
      'vocab_params': params.get('vocab', params['embedding'] + params['output_head']),
      'total_params': params['total'],
      'vocab_bytes': summary.get('bytes', {}).get('vocab', FLOAT32_BYTES * params.get(
          'vocab', params['embedding'] + params['output_head'])),
      'valid_ppl': summary.get('valid_ppl'), 'best_valid_ppl': summary.get('best_valid_ppl'),
      'test_ppl': summary.get('test_ppl'), 'tokens_per_s': summary.get('tokens_per_s'),
  }
  for column in metric_extras():
    if column in summary:
      row[column] = summary[column]
  return {**row, **_group_columns(summary, config['eval']['frequent_count'])}


def shape(embed: dict) -> str:
  """'dpq_groups=32': the input kind's size fields (KindConfig.size_fields) that differ from
  their defaults, comma-joined ('' where none do)."""
  declared = embeddings.kind(embed['kind']).fields
  return ','.join(f'{field}={_shape_value(embed[field])}'
                  for field in embeddings.kind(embed['kind']).size_fields
                  if field in embed and _shape_value(embed[field]) != _shape_value(
                      declared[field]))


def _shape_value(value) -> str:
  """A size field's value as text: '32', '4', '16+16+8' for a sequence."""
  if isinstance(value, (list, tuple)):
    return '+'.join(_shape_value(v) for v in value)
  return f'{value:g}' if isinstance(value, float) else str(value)


def group_lower(name: str) -> float:
  """A frequency group's lower end: '101-1000' -> 101, '10001+' -> 10001, '0' -> 0, and
  '<unk>' (no number) -> inf, so it sorts last."""
  first = name.split('-')[0].rstrip('+')
  return int(first) if first.isdigit() else math.inf


def frequent_groups(prefix: str, names: Sequence[str], min_count: int | None
                    ) -> tuple[str, list[str]]:
  """(label, members): the frequent groups among one grouping's `names`. Bands (BAND_PREFIX,
  rank in train frequency): every band but an open-ended rarest one ('10001+') and <unk>,
  labelled 'rank1-10000'. Classes (CLASS_PREFIX, train count): those from `min_count`
  (eval.frequent_count) train occurrences on ('11-100', '101+'), labelled 'count11+'.
  ('', []) where none."""
  numeric = sorted((n for n in names if math.isfinite(group_lower(n))), key=group_lower)
  if prefix == BAND_PREFIX:
    members = numeric[:-1] if numeric and numeric[-1].endswith('+') else numeric
    label = f'rank{members[0].split("-")[0]}-{members[-1].split("-")[-1]}' if members else ''
    return label, members
  if min_count is None:
    return '', []
  members = [n for n in numeric if group_lower(n) >= min_count]
  return (f'count{min_count}+', members) if members else ('', [])


def frequent_count(column: str | None) -> int | None:
  """The train count a frequent-classes column pools from ('test_frequent_ppl@count11+' ->
  11); None for a bands column or none."""
  found = re.search(r'@count(\d+)\+$', column or '')
  return int(found.group(1)) if found else None


def _group_columns(summary: dict, min_count: int | None) -> dict[str, float]:
  """A summary's per-group columns (the module docstring): each band's and class's test
  perplexity and share of the test tokens, and the frequent groups' pooled perplexity (the
  classes from `min_count`, the run's eval.frequent_count, train occurrences on)."""
  row = {}
  for key, prefix in GROUPINGS.items():
    groups = summary.get(key) or {}
    total = sum(result.get('tokens', 0) for result in groups.values())
    for name, result in groups.items():
      row[prefix + name] = result['ppl']
      if total:
        row[SHARE_PREFIX[prefix] + name] = result['tokens'] / total
    label, members = frequent_groups(prefix, list(groups), min_count)
    scored = [groups[name] for name in members if groups[name].get('tokens')]  # 0: no loss
    tokens = sum(result['tokens'] for result in scored)
    if tokens:  # the token-weighted mean loss of the members, as perplexity
      loss = sum(_loss(result) * result['tokens'] for result in scored) / tokens
      row[FREQUENT_PREFIX + label] = math.exp(loss)
  return row


def _loss(result: dict) -> float:
  """A group's mean loss in nats (log of its perplexity where the summary has no loss)."""
  return float(result['loss']) if result.get('loss') is not None else math.log(result['ppl'])


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
    # (kind, method, fine-tuning steps, ppl by rank, params by rank) of each series
    series = [(method, method, 0, result['ppl_by_rank'], result['params_by_rank'])]
    if result.get('finetuned_ppl_by_rank'):
      steps = result['finetune_steps']
      series.append((f'{method}_ft{steps}', method, steps, result['finetuned_ppl_by_rank'],
                     result['params_by_rank']))
      if 'dense_finetuned_ppl' in result:
        series.append((f'dense_ft{steps}', FINETUNED, steps,
                       {None: result['dense_finetuned_ppl']}, {None: result['dense_params']}))
    parent_step = result.get('step')  # the checkpoint compressed
    for kind, derived, finetune, ppl_by_rank, params_by_rank in series:
      for rank, ppl in ppl_by_rank.items():
        params = params_by_rank[rank]
        tied = result['head'] == 'tied'  # the compressed table is the head too
        row = rows.setdefault((kind, rank), {
            'run': run, 'kind': kind, 'head': result['head'],
            'rank': None if rank is None else int(rank), 'shape': '',
            'head_kind': kind if tied else 'dense',
            'head_rank': None if rank is None or not tied else int(rank), 'seed': seed,
            'method': derived, 'finetune_steps': finetune,
            'steps': None if parent_step is None else parent_step + finetune,
            'best_step': None, 'embedding_params': params['embedding'],
            'vocab_params': params.get('vocab', params['embedding']),
            'total_params': params['total'],
            'vocab_bytes': FLOAT32_BYTES * params.get('vocab', params['embedding']),
            'valid_ppl': None, 'best_valid_ppl': None, 'test_ppl': None,
            'tokens_per_s': None})
        row[f'{split}_ppl'] = ppl
        if split == 'valid':  # one evaluation: the last is the best
          row['best_valid_ppl'] = ppl
  return list(rows.values())


def _quant_rows(run: str, run_dir: pathlib.Path, parent: dict, min_count: int
                ) -> list[dict[str, Any]]:
  """One row per bit width of `run`'s post-training quantization (posthoc_quant_<split>.json,
  evaluation/posthoc_quant.py), beside its trained row `parent`: its kind, head, rank, seed,
  parameters and steps, method POSTHOC_QUANT, QUANT_BITS, the quantized vocab_bytes, and the
  valid and test perplexity of the files there are."""
  rows: dict[str, dict] = {}
  for split in ('valid', 'test'):
    path = run_dir / QUANT_FILE.format(split=split)
    if not path.exists():
      continue
    result = json.loads(path.read_text())
    for bits, ppl in result['ppl_by_bits'].items():
      row = rows.setdefault(bits, {
          **{c: parent[c] for c in (*GROUP, 'seed', 'steps', *PARAMS)},
          'run': run, 'method': POSTHOC_QUANT, 'finetune_steps': 0, QUANT_BITS: int(bits),
          'best_step': None, 'vocab_bytes': result['bytes_by_bits'][bits]['vocab'],
          'valid_ppl': None, 'best_valid_ppl': None, 'test_ppl': None, 'tokens_per_s': None})
      row[f'{split}_ppl'] = ppl
      if split == 'valid':  # one evaluation: the last is the best
        row['best_valid_ppl'] = ppl
      else:
        row.update(_quant_groups(result, bits, parent, min_count))
  return list(rows.values())


def _quant_groups(result: dict, bits: str, parent: dict, min_count: int
                  ) -> dict[str, float]:
  """A post-training width's per-group test columns: each band's and class's perplexity
  (the file's), their shares (the parent's: the same tokens) and the frequent groups pooled
  from `min_count` (the parent's eval.frequent_count), as _group_columns makes them for a
  trained run."""
  summary = {}
  for key, prefix in GROUPINGS.items():
    found = (result.get(f'{key.removeprefix("test_")}_ppl_by_bits') or {}).get(bits) or {}
    share = SHARE_PREFIX[prefix]
    summary[key] = {name: {'ppl': ppl, 'tokens': parent.get(share + name) or 0}
                    for name, ppl in found.items()}
  return _group_columns(summary, min_count)


def _sort_key(row: dict) -> tuple:
  """(head, kind order, kind, rank, head kind order, head rank, seed, run, then a run's
  post-training quantization after it, widest first); a derived kind (dense_ft30,
  posthoc_svd_freq) goes with the longest kind name it starts with."""
  kind = row['kind']
  base = next((k for k in sorted(_KIND_ORDER, key=len, reverse=True) if kind.startswith(k)),
              kind)
  order = _KIND_ORDER.index(base) if base in _KIND_ORDER else len(_KIND_ORDER)
  head_order = (_KIND_ORDER.index(row['head_kind']) if row.get('head_kind') in _KIND_ORDER
                else -1)
  quantized = row.get('method') == POSTHOC_QUANT
  return (row['head'] != 'tied', order, kind, row['rank'] or 0, head_order,
          row.get('head_rank') or 0, -1 if row['seed'] is None else row['seed'], row['run'],
          quantized, -row[QUANT_BITS] if quantized else 0)


def flat(config: dict, prefix: str = '') -> dict[str, Any]:
  """A saved config as {dotted field: value} (tuples and lists as tuples)."""
  fields = {}
  for key, value in config.items():
    if isinstance(value, dict):
      fields.update(flat(value, f'{prefix}{key}.'))
    else:
      fields[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
  return fields


def swept_fields(configs: list[dict]) -> dict[str, str]:
  """{dotted field: column name} of the config fields whose values differ between the
  runs (a sweep's axes: train.lr -> 'lr'), among those every run's config has (a field
  added to the code later is no axis), NOT_SWEPT aside."""
  flats = [flat(config) for config in configs]
  common = set.intersection(*(set(flat) for flat in flats)) if flats else set()
  fields = sorted(field for field in common
                  if not any(field == skip or field.startswith(skip) for skip in NOT_SWEPT)
                  and len({repr(flat[field]) for flat in flats}) > 1)
  names = [field.rsplit('.', 1)[-1] for field in fields]
  return {field: name if names.count(name) == 1 else field
          for field, name in zip(fields, names, strict=True)}


def _config(summary: dict) -> dict:
  """A run's config, migrated: a run saved before a field existed holds the default it
  computed, so a field added later (model.embed.quant_bits) is swept where a newer run
  moved it."""
  return migrate_lib.migrate(copy.deepcopy(summary['config']))


def run_config(run_dir: str | os.PathLike) -> dict:
  """The migrated config of the finished run in `run_dir` (its summary.json's)."""
  return _config(json.loads((pathlib.Path(run_dir) / 'summary.json').read_text()))


def sweep_axes(sweep_dir: str | os.PathLike) -> dict[str, str]:
  """swept_fields of the finished runs of `sweep_dir` (their migrated configs): the columns
  collect_rows gives them."""
  return swept_fields([run_config(run) for run in run_dirs(pathlib.Path(sweep_dir))
                       if (run / 'summary.json').exists()])


def collect_rows(sweep_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
  """The per-run rows (sorted by head, kind, rank, seed) and the runs without a summary.
  Each row carries the values of the swept fields (`swept_fields`) of its run's config;
  post-hoc rows those of the run they compress (a post-training quantization row its own
  QUANT_BITS)."""
  runs, unfinished = [], []
  for run_dir in run_dirs(pathlib.Path(sweep_dir)):
    summary_path = run_dir / 'summary.json'
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is None and (run_dir / 'config.json').exists():
      unfinished.append(run_dir.name)
    runs.append((run_dir, summary))
  configs = {run_dir: _config(summary) for run_dir, summary in runs if summary}
  swept = swept_fields(list(configs.values()))
  rows = []
  for run_dir, summary in runs:
    values, seed = {}, None
    if summary:
      rows.append(_summary_row(run_dir.name, summary, configs[run_dir]))
      seed = rows[-1]['seed']
      fields = flat(configs[run_dir])
      values = {name: fields[field] for field, name in swept.items()}
      rows[-1].update(values)
      rows.extend({**row, **values, QUANT_BITS: row[QUANT_BITS]}
                  for row in _quant_rows(run_dir.name, run_dir, rows[-1],
                                         configs[run_dir]['eval']['frequent_count']))
    rows.extend({**row, **values} for row in _posthoc_rows(run_dir.name, run_dir, seed))
  return sorted(rows, key=_sort_key), unfinished


_COLUMN_ORDER = (FREQUENT_PREFIX, CLASS_PREFIX, *SHARE_PREFIX.values(), BAND_PREFIX)


def _group_order(column: str) -> tuple[int, float, str]:
  """Per-group columns: frequent, classes, shares, then bands last, each by lower end
  ('test_ppl@101-1000' after 'test_ppl@1-100', '<unk>' last)."""
  prefix = next(p for p in _COLUMN_ORDER if column.startswith(p))
  name = column.removeprefix(prefix)
  return _COLUMN_ORDER.index(prefix), group_lower(name), name


def rows_table(rows: list[dict]) -> pd.DataFrame:
  """The per-run rows as summary.csv's frame: COLUMNS, the swept fields' columns, the
  metrics beyond perplexity, then the per-group columns (bands last); `series` added."""
  groups = sorted({c for row in rows for c in row if c.startswith(GROUP_PREFIXES)},
                  key=_group_order)
  extras = [c for c in metric_extras() if any(c in row for row in rows)]
  swept = [c for row in rows for c in row
           if c not in COLUMNS and c not in extras and not c.startswith(GROUP_PREFIXES)]
  table = pd.DataFrame(rows, columns=[*COLUMNS, *dict.fromkeys(swept), *extras, *groups])
  return with_series(table.astype(INT_COLUMNS))


def swept_columns(table: pd.DataFrame) -> list[str]:
  """The swept fields' columns of a per-run or aggregate table (rows_table)."""
  known = {*COLUMNS, *metric_extras(), 'series', 'seeds'}
  return [c for c in table.columns if c not in known and not c.startswith(GROUP_PREFIXES)
          and not c.endswith(('_mean', '_std'))]


def base_rows(table: pd.DataFrame, ignore: Sequence[str] = ()) -> pd.DataFrame:
  """The rows at every swept field's most common value (the grid's own settings: what the
  plots and the by-vocab-params table show; the tuned rows show the rest), fields in `ignore`
  aside. QUANT_BITS's most common value is the trained runs' (post-training quantization
  rows keep theirs: a width tried after training is no setting of the grid)."""
  keep = pd.Series(True, index=table.index)
  trained = (table['method'] == TRAINED if 'method' in table
             else pd.Series(True, index=table.index))
  for column in swept_columns(table):
    if column in ignore:
      continue
    values = table[column].map(repr)
    if column == QUANT_BITS and trained.any():
      keep &= (values == values[trained].mode().iloc[0]) | ~trained
    else:
      keep &= values == values.mode().iloc[0]
  return table[keep]


def grid_settings(table: pd.DataFrame) -> str:
  """'lr 0.003, num_steps 1500': the grid's own value of each swept field (base_rows, its
  trained rows: a post-training width is no setting), fields a run does not record left out."""
  base = base_rows(table)
  if 'method' in base:
    base = base[base['method'] == TRAINED]
  if base.empty:
    return ''
  row = base.iloc[0]
  return ', '.join(f'{c} {row[c]:g}' if is_number(row[c]) else f'{c} {row[c]}'
                   for c in swept_columns(base) if not pd.isna(row[c]))


def tuned(table: pd.DataFrame, over: Sequence[str] | None = (TUNED,)) -> pd.DataFrame:
  """The tuned rows: per point (GROUP, and the swept fields not in `over`) trained in
  several configurations (combinations of the swept fields in `over`; None: every swept
  field but QUANT_BITS, so per kind, head, rank and precision), the configuration of lowest
  best-valid perplexity, with its test perplexity (mean over all its seeds). The
  configurations are compared on the seeds every one of them has (seed 0 alone when one has
  three seeds and the others one: like against like), or on all seeds when they share none.
  The test split chooses nothing.

  Every column of the aggregate (the per-group means too), and: `over` (the fields chosen
  over, comma-joined), `configs` (how many were tried), `grid` (how many combinations of
  the values tried: more than `configs` where the configurations tried are no full grid),
  `tried` (each field's values, '+'-joined; one field: the values alone), `edges` (the
  numeric fields whose chosen value is the lowest or highest tried: a wider range may do
  better) and `at_edge` (any such field), `best_step` (each seed's step of best valid
  perplexity, '/'-joined) and `best_at_last` (every seed's best at its last step: still
  improving)."""
  columns = ['kind', 'head', 'rank', TUNED, 'over', 'configs', 'grid', 'tried', 'edges',
             'at_edge', 'best_step', 'best_at_last', 'seeds', 'vocab_params',
             'best_valid_ppl_mean', 'test_ppl_mean', 'test_ppl_std', 'series']
  runs = table[table['method'] == TRAINED] if 'method' in table.columns else table
  groups = aggregate(runs)
  swept = swept_columns(groups)
  # QUANT_BITS (trained quantized) is how a point stores its tables, never a setting tuned
  # for it: a point at each precision is its own.
  fields = ([c for c in swept if c != QUANT_BITS] if over is None
            else [c for c in over if c in swept])
  if not fields:
    return pd.DataFrame(columns=columns)
  keys = [*GROUP, *(c for c in swept if c not in fields)]
  rows = []
  for _, points in groups.groupby(keys, dropna=False, sort=False):
    points = points[np.isfinite(points['best_valid_ppl_mean'].astype(float))]
    if len(points) < 2:
      continue
    best = points.loc[_valid_on_common_seeds(runs, points, [*keys, *fields]).idxmin()]
    values = {field: sorted(points[field].dropna().unique(), key=_sortable) for field in fields}
    values = {field: tried for field, tried in values.items() if len(tried) > 1}
    edges = [field for field, tried in values.items() if is_number(best[field])
             and best[field] in (tried[0], tried[-1])]
    chosen = runs.loc[matching(runs, best, [*keys, *fields])]
    best_steps = chosen.sort_values('seed')['best_step']
    at_last = (chosen['best_step'] == chosen['steps']).fillna(False)
    rows.append({**best.to_dict(), 'over': ','.join(values), 'configs': len(points),
                 'grid': math.prod(len(tried) for tried in values.values()),
                 'tried': '; '.join(_values_text(field, tried, len(values) > 1)
                                    for field, tried in values.items()),
                 'edges': ','.join(edges), 'at_edge': bool(edges),
                 'best_step': '/'.join('-' if pd.isna(s) else str(int(s)) for s in best_steps),
                 'best_at_last': bool(at_last.all())})
  if not rows:
    return pd.DataFrame(columns=columns)
  frame = pd.DataFrame(rows)
  first = [c for c in columns if c in frame.columns]  # TUNED only where it was swept
  return frame[[*first, *(c for c in frame.columns if c not in first)]]


def _sortable(value) -> tuple:
  """Numbers in order, then anything else by its text."""
  return (0, value, '') if is_number(value) else (1, 0, repr(value))


def _values_text(field: str, values: list, named: bool) -> str:
  """'0.0015+0.003' (one field) or 'lr 0.0015+0.003' (`named`: several)."""
  text = '+'.join(f'{v:g}' if is_number(v) else str(v) for v in values)
  return f'{field} {text}' if named else text


def _valid_on_common_seeds(runs: pd.DataFrame, points: pd.DataFrame,
                           keys: list[str]) -> pd.Series:
  """Per aggregated point (index of `points`), the mean best-valid perplexity of its runs
  (those equal to it on `keys`) over the seeds every point has (all seeds where they share
  none)."""
  point_runs = {index: runs.loc[matching(runs, point, keys)] for index, point in
                points.iterrows()}
  common = set.intersection(*(set(r['seed'].dropna()) for r in point_runs.values()))
  valid = {index: r.loc[r['seed'].isin(common), 'best_valid_ppl'] if common
           else r['best_valid_ppl'] for index, r in point_runs.items()}
  return pd.Series({index: v.astype(float).mean() for index, v in valid.items()})


def matching(frame: pd.DataFrame, row: pd.Series, columns: list[str]) -> pd.Series:
  """The rows of `frame` equal to `row` on `columns` (NaN equal to NaN)."""
  keep = pd.Series(True, index=frame.index)
  for column in columns:
    value = row[column]
    keep &= frame[column].isna() if pd.isna(value) else frame[column] == value
  return keep


def with_heads(table: pd.DataFrame) -> pd.DataFrame:
  """`table` with shape, head_kind and head_rank, filled in for a summary.csv written before
  they existed (every point then had its kind's default shape, '' (read back as NaN from a
  CSV); every untied head was the dense DxV matrix; a tied head is the input's)."""
  if 'shape' not in table or table['shape'].isna().any():
    table = table.copy()
    column = table.pop('shape') if 'shape' in table else pd.Series('', index=table.index)
    table.insert(list(table.columns).index('rank') + 1, 'shape', column.astype(object).fillna(''))
  if 'head_kind' in table and 'head_rank' in table:
    return table
  table = table.copy()
  tied = table['head'] == 'tied'
  table.insert(list(table.columns).index('shape') + 1, 'head_kind',
               np.where(tied, table['kind'], 'dense'))
  table.insert(list(table.columns).index('head_kind') + 1, 'head_rank',
               table['rank'].where(tied))
  return table


def with_bytes(table: pd.DataFrame) -> pd.DataFrame:
  """`table` with vocab_bytes, filled in for a summary.csv written before it existed: every
  table then was float32, FLOAT32_BYTES per vocabulary parameter."""
  if 'vocab_bytes' in table or 'vocab_params' not in table:
    return table
  table = table.copy()
  table.insert(list(table.columns).index('total_params') + 1, 'vocab_bytes',
               FLOAT32_BYTES * table['vocab_params'])
  return table


def with_methods(table: pd.DataFrame) -> pd.DataFrame:
  """`table` with method and finetune_steps, filled in for a summary.csv written before
  they existed, when the kind spelled them: `posthoc_svd_ft10` is posthoc_svd fine-tuned 10
  steps, `dense_ft10` the fine-tuned control, a kind of embeddings.KINDS trained."""
  if 'method' in table:
    return table
  table = table.copy()
  spelled = table['kind'].astype(str).str.extract(r'^(?P<base>.*?)(?:_ft(?P<steps>\d+))?$')
  finetuned = spelled['steps'].notna()
  method = np.where(spelled['base'].isin(embeddings.KINDS),
                    np.where(finetuned, FINETUNED, TRAINED), spelled['base'])
  at = list(table.columns).index('seed') + 1
  table.insert(at, 'method', method)
  table.insert(at + 1, 'finetune_steps', spelled['steps'].astype(float).fillna(0).astype(int))
  return table


def with_series(table: pd.DataFrame) -> pd.DataFrame:
  """`table` plus `series`: its kind, `_untied` appended for an untied head,
  `_head<kind><rank>` for an untied head of its own kind (one curve each: over input rank
  at one head rank), and `_posthoc_int<bits>` for a post-training quantization row."""
  table = table.copy()
  untied = table['head'] == 'untied'
  head_kind = (table['head_kind'] if 'head_kind' in table
               else pd.Series('dense', index=table.index)).fillna('dense').astype(str)
  head_rank = (table['head_rank'] if 'head_rank' in table
               else pd.Series(pd.NA, index=table.index))
  head_rank = head_rank.map(lambda r: '' if pd.isna(r) else str(int(r))).astype(str)
  own = untied & (head_kind != 'dense')
  quantized = (table['method'] == POSTHOC_QUANT if 'method' in table
               else pd.Series(False, index=table.index))
  bits = (table[QUANT_BITS] if QUANT_BITS in table else pd.Series(pd.NA, index=table.index))
  bits = bits.map(lambda b: '' if pd.isna(b) else str(int(b))).astype(str)
  table['series'] = (table['kind'] + np.where(untied, '_untied', '')
                     + np.where(own, '_head' + head_kind + head_rank, '')
                     + np.where(quantized, '_posthoc_int' + bits, ''))
  return table


def precision(row) -> str:
  """How a row's vocabulary tables are stored: 'float32', 'codes' (the kind's storage: dpq's
  integer codes with float32 codebooks; a post-hoc SVD row's: float32), 'int8 QAT' (trained
  quantized: model.embed.quant_bits) or 'int4 post-training' (method POSTHOC_QUANT)."""
  bits = row.get(QUANT_BITS)
  if bits is None or pd.isna(bits) or not int(bits):
    kind = row.get('kind')
    return embeddings.kind(kind).storage if kind in embeddings.KINDS else 'float32'
  return f'int{int(bits)} ' + ('post-training' if row.get('method') == POSTHOC_QUANT else 'QAT')


def bytes_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The aggregate rows on the memory-perplexity front (plots.plot_bytes_front, summary.md's
  by-bytes table): every trained kind and head at every precision (float32, QAT runs at each
  swept quant_bits, post-training int8/int4), at the grid's other settings (base_rows)."""
  base = base_rows(table, ignore=(QUANT_BITS,))
  if 'method' in base:
    base = base[base['method'].isin((TRAINED, POSTHOC_QUANT))]
  return aggregate(base)


def metric_columns(table: pd.DataFrame) -> list[str]:
  """The metric columns of a per-run table: valid, best valid and test perplexity, the
  other test metrics, then the per-group columns (perplexities and shares)."""
  return ['valid_ppl', 'best_valid_ppl', 'test_ppl',
          *[c for c in metric_extras() if c in table.columns],
          *[c for c in table.columns if c.startswith(GROUP_PREFIXES)]]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
  """One row per (kind, head, rank, swept fields) of a per-run table: `seeds`, parameter
  counts, and `<metric>_mean` / `<metric>_std` (sample std over seeds; NaN for one seed)."""
  metrics = metric_columns(table)
  keys = [*GROUP, *(c for c in DERIVATION if c in table.columns), *swept_columns(table)]
  groups = table.groupby(keys, dropna=False, sort=False)
  out = groups[[c for c in SIZES if c in table.columns]].first()  # an older CSV: no bytes
  out.insert(0, 'seeds', groups.size())
  numeric = table[keys + metrics].astype({m: float for m in metrics})
  stats = numeric.groupby(keys, dropna=False, sort=False)[metrics].agg(['mean', 'std'])
  stats.columns = [f'{metric}_{stat}' for metric, stat in stats.columns]
  return with_series(out.join(stats).reset_index())


def is_number(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
  """The rows no other row beats on both `x` and `y` (lower is better), sorted by `x`."""
  ordered = table.dropna(subset=[x, y]).sort_values([x, y], kind='stable')
  best, keep = np.inf, []
  for index, value in ordered[y].items():
    if value < best:
      best = value
      keep.append(index)
  return ordered.loc[keep]
