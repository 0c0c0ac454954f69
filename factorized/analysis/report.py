r"""A sweep directory's reports, rebuilt from its runs' summaries every time.

A sweep directory is one TensorBoard logdir whose runs are the points (each carries its
hyper-parameters: the HParams dashboard shows hparams/valid_ppl and hparams/test_ppl
against kind, rank, seed and parameter counts). `write_reports(sweep_dir)` reads every
`<run>/summary.json` and `<run>/<method>_<split>.json` (post-hoc compression: posthoc_svd,
posthoc_svd_freq, ...; post-training quantization: posthoc_quant) directly below `sweep_dir`
and (re)writes:

  summary.csv        one row per run (COLUMNS): kind, head, rank, seed, embedding, vocab
                     and total parameters (model/costs.py: `vocab` = every parameter the
                     embedding choice adds, the budget kinds are compared on), valid ppl
                     (the last evaluation, as in HParams), test ppl (the best checkpoint by
                     valid ppl), tokens/s, then test ppl per frequency band
                     (`test_ppl@<band>`); plus rows of kind <method> (posthoc_svd,
                     posthoc_svd_freq, ...; `<method>_ft<N>` and `dense_ft<N>` after N
                     fine-tuning steps) per rank for a dense run compressed by eval.py
                     --svd_ranks; rows of method posthoc_quant (the run's kind and rank,
                     quant_bits, vocab_bytes as quantized) per bit width of a run quantized by
                     eval.py --quant_bits, beside it; rows sorted by head, kind
                     (embeddings.KINDS order, post-hoc last), rank and seed;
  aggregate.csv      one row per (kind, head, rank) over seeds: `seeds` (the count), the
                     parameter counts, and mean and sample standard deviation (empty for one
                     seed) of valid, test and band perplexities;
  summary.md         the aggregate table; every point by vocabulary parameters (all kinds on
                     one axis, whatever their rank means, with the Pareto front marked);
                     every trained point at every precision by vocabulary bytes (float32,
                     QAT, post-training int8/int4; its Pareto front marked); then the per-run
                     table;
  ppl_vs_vocab_params.png  the headline (plots.plot_headline): test ppl against vocab
                     params, one line per kind (tied head, the grid's settings; each kind
                     at its tuned lr hollow), dense as a band; ppl_vs_rank.png the same
                     against rank; band_ppl_vs_vocab_params.png the same per frequency band;
                     valid_ppl_vs_lr.png (where lr was swept), head_rank_map.png (where
                     untied heads of their own kind ran: input rank x head rank) and
                     posthoc_vs_scratch_ppl_vs_rank.png (where a dense run was compressed:
                     post-hoc SVD against svd from scratch); ppl_vs_vocab_bytes.png (where
                     rows take two byte sizes or more: test ppl against vocab bytes, every
                     precision, the Pareto front across them) and band_ppl_vs_vocab_bytes.png
                     (the same per frequency band). Bars: sd over seeds;
  sweep/             a TensorBoard run of scalars for the Scalars tab (means over seeds):
                     ppl_vs_rank/<series> (test ppl, step = rank),
                     valid_ppl_vs_rank/<series>, ppl_vs_vocab_params/<series> and
                     valid_ppl_vs_vocab_params/<series> (step = vocab params). <series> is
                     the kind, `_untied` appended for untied heads; a dense run is drawn at
                     step = min(V, D) (its table's full rank).

Rerunning rewrites all of them (the `sweep` run's old event files are deleted first), so
they always describe the directory as it is. `python -m factorized.analysis.report DIR`
rewrites them from the summaries alone (no checkpoint, corpus or event file needed).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys

import pandas as pd

from factorized import files
from factorized.analysis import plots
from factorized.analysis.table import (
  AGGREGATE_FILE,
  BAND_PREFIX,
  COLUMNS,
  CSV_FILE,
  SIZES,
  SWEEP_RUN,
  TUNED,
  aggregate,
  base_rows,
  bytes_rows,
  collect_rows,
  head_label,
  is_number,
  metric_columns,
  pareto_front,
  precision,
  rows_table,
  run_dirs,
  swept_columns,
  tuned,
)

MD_FILE = 'summary.md'
PNG_FILE = 'ppl_vs_vocab_params.png'
PNG_FILES = (PNG_FILE, 'ppl_vs_rank.png', 'band_ppl_vs_vocab_params.png')
TUNING_PNG_FILE = 'valid_ppl_vs_lr.png'  # written when train.lr is swept
HEAD_MAP_FILE = 'head_rank_map.png'  # written when untied heads of their own kind ran
POSTHOC_PNG_FILE = 'posthoc_vs_scratch_ppl_vs_rank.png'  # written when a dense run was compressed
BYTES_PNG_FILE = 'ppl_vs_vocab_bytes.png'  # written when the rows take two byte sizes or more
BAND_BYTES_PNG_FILE = 'band_ppl_vs_vocab_bytes.png'  # its twin per band, written with it
# Written by the findings of a folder whose findings.json names another `beside` it.
PROTOCOLS_PNG_FILE = 'ppl_vs_vocab_params_protocols.png'


def _format(column: str, value) -> str:
  if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
    return '-'
  if column in SIZES:
    return f'{int(value):,}'
  if 'ppl' in column:
    return f'{value:.2f}' if is_number(value) else str(value)
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
  if not is_number(mean):
    return '-'
  return f'{mean:.2f} ± {std:.2f}' if is_number(std) else f'{mean:.2f}'


def _by_size(groups: pd.DataFrame, size: str, precisions: bool = False) -> list[str]:
  """Every point of `groups` by `size` (vocab_params or vocab_bytes), test ppl mean ± std,
  the Pareto front marked; `precisions`: with how each stores its tables (table.precision)."""
  points = groups.astype({'test_ppl_mean': float}).sort_values(size, kind='stable')
  front = set(pareto_front(points, size, 'test_ppl_mean').index)
  header = [size.replace('_', ' '), 'kind', 'head', 'rank',
            *(['precision'] if precisions else []), 'test ppl', 'Pareto front']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for index, row in points.iterrows():
    cells = [_format(size, row[size]), row['kind'], head_label(row), _format('rank', row['rank']),
             *([precision(row)] if precisions else []), _mean_std(row, 'test_ppl'),
             'yes' if index in front else '']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def markdown_report(table: pd.DataFrame, unfinished: list[str]) -> str:
  """summary.md: the aggregate over seeds (mean ± std), every point by vocab parameters
  and, at every precision, by vocab bytes, then every run."""
  groups = aggregate(table)
  bands = [c for c in metric_columns(table) if c.startswith(BAND_PREFIX)]
  swept = swept_columns(groups)
  header = ['kind', 'head', 'rank', *swept, 'seeds', 'vocab params', 'total params',
            'valid ppl', 'test ppl', *[b.replace(BAND_PREFIX, 'test ppl ') for b in bands]]
  lines = ['Mean ± standard deviation over seeds:', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for _, row in groups.iterrows():
    cells = [row['kind'], head_label(row), _format('rank', row['rank']),
             *[_format(c, row[c]) for c in swept], str(row['seeds']),
             _format('vocab_params', row['vocab_params']),
             _format('total_params', row['total_params']),
             *[_mean_std(row, m) for m in ('valid_ppl', 'test_ppl', *bands)]]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'By vocabulary parameters (every kind on one axis; the Pareto front: no point '
            'is both smaller and better):', '',
            *_by_size(aggregate(base_rows(table)), 'vocab_params')]
  by_bytes = bytes_rows(table)
  if not by_bytes.empty:
    lines += ['', 'By vocabulary bytes (every trained point at every precision: float32, QAT, '
              'post-training quantization; the Pareto front: no point is both smaller and '
              'better):', '', *_by_size(by_bytes, 'vocab_bytes', precisions=True)]
  chosen = tuned(table)
  if not chosen.empty:
    lines += ['', f'Tuned {TUNED} (per kind, head and rank: the value of lowest best-valid '
              'perplexity on the seeds every value has; test over all its seeds; the test split '
              'chooses nothing):', '',
              f'| kind | head | rank | {TUNED} | tried | at an edge | best valid ppl | '
              'test ppl |', '|---|---|---|---|---|---|---|---|']
    for _, row in chosen.iterrows():
      lines.append(f'| {row["kind"]} | {head_label(row)} | {_format("rank", row["rank"])} | '
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
            if is_number(row[metric]):
              writer.add_scalar(f'{prefix}ppl_vs_{axis}/{series}', row[metric],
                                global_step=int(row[step_key]))
  finally:
    writer.close()


def _full_rank(sweep_dir: pathlib.Path) -> int | None:
  for run_dir in run_dirs(sweep_dir):
    path = run_dir / 'summary.json'
    if path.exists():
      summary = json.loads(path.read_text())
      return min(summary['vocab_size'], summary['config']['model']['model_dim'])
  return None


def write_reports(sweep_dir: str | os.PathLike) -> str:
  """(Re)writes summary.csv, aggregate.csv, summary.md, the plots and the `sweep` run;
  returns the Markdown report."""
  root = pathlib.Path(sweep_dir)
  rows, unfinished = collect_rows(root)
  table = rows_table(rows)
  report = markdown_report(table, unfinished)
  files.write_atomic(root / CSV_FILE, _csv(table.drop(columns='series')))
  files.write_atomic(root / AGGREGATE_FILE, _csv(aggregate(table).drop(columns='series')))
  files.write_atomic(root / MD_FILE, report)
  base = base_rows(table)
  # The headline figures choose their own rows (the grid's tied points, the tuned ones);
  # what they leave out (untied heads, post-hoc rows, the tuning curves) has its own figure.
  figures = (plots.plot_headline(table, 'vocab_params'), plots.plot_headline(table, 'rank'),
             plots.plot_band_ppl(table, 'vocab_params'))
  for name, figure in zip(PNG_FILES, figures, strict=True):
    files.write_atomic(root / name, plots.png_bytes(figure))
  if not tuned(table).empty:
    files.write_atomic(root / TUNING_PNG_FILE, plots.png_bytes(plots.plot_tuning(table, TUNED)))
  if not plots.head_maps(base).empty:
    files.write_atomic(root / HEAD_MAP_FILE, plots.png_bytes(plots.plot_head_map(base)))
  if not plots.posthoc_rows(table).empty:
    files.write_atomic(root / POSTHOC_PNG_FILE, plots.png_bytes(plots.plot_posthoc(table)))
  if bytes_rows(table)['vocab_bytes'].nunique() >= 2:
    files.write_atomic(root / BYTES_PNG_FILE, plots.png_bytes(plots.plot_bytes_front(table)))
    files.write_atomic(root / BAND_BYTES_PNG_FILE, plots.png_bytes(plots.plot_band_bytes(table)))
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
    sys.exit('usage: python -m factorized.analysis.report SWEEP_DIR  (rewrites its reports from '
             'the summaries alone)')
  print(write_reports(sys.argv[1]))
