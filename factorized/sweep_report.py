r"""A sweep directory's reports, rebuilt from its runs' summaries every time.

A sweep directory is one TensorBoard logdir whose runs are the points (each carries its
hyper-parameters: the HParams dashboard shows hparams/valid_ppl and hparams/test_ppl
against kind and rank). `write_reports(sweep_dir)` reads every `<run>/summary.json` and
`<run>/posthoc_svd_<split>.json` directly below `sweep_dir` and (re)writes:

  summary.csv, summary.md  one row per run: run, kind, head, rank, embedding params, total
                           params, valid ppl (the last evaluation, as in HParams), test ppl
                           (the best checkpoint by valid ppl), tokens/s; plus rows of kind
                           `posthoc_svd` (and `posthoc_svd_ft<N>` after N fine-tuning steps)
                           per rank for a dense run compressed by eval.py --svd_ranks;
  ppl_vs_rank.png          test ppl against rank (log axis), one line per kind, each dense
                           baseline a horizontal line, the post-hoc SVD curve when present
                           (a series without test numbers plots valid ppl and says so);
  sweep/                   a TensorBoard run of scalars for the Scalars tab:
                           ppl_vs_rank/<series> (test ppl, step = rank),
                           valid_ppl_vs_rank/<series> (valid ppl, step = rank),
                           ppl_vs_embedding_params/<series> and
                           valid_ppl_vs_embedding_params/<series> (step = embedding params).
                           <series> is the kind, `_untied` appended for untied heads; a dense
                           run is drawn at step = min(V, D) (its table's full rank).

Rerunning rewrites all of them (the `sweep` run's old event files are deleted first), so
they always describe the directory as it is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import tempfile
from typing import Any

SWEEP_RUN = 'sweep'
CSV_FILE, MD_FILE, PNG_FILE = 'summary.csv', 'summary.md', 'ppl_vs_rank.png'
POSTHOC_FILE = 'posthoc_svd_{split}.json'
COLUMNS = ('run', 'kind', 'head', 'rank', 'embedding_params', 'total_params', 'valid_ppl',
           'test_ppl', 'tokens_per_s')
_HEADERS = ('run', 'kind', 'head', 'rank', 'embedding params', 'total params', 'valid ppl',
            'test ppl', 'tokens/s')
_KIND_ORDER = ('dense', 'albert', 'svd', 'posthoc_svd')


def _run_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in sweep_dir.iterdir()
                if p.is_dir() and p.name != SWEEP_RUN and not p.name.startswith('.'))


def _summary_row(run: str, summary: dict) -> dict[str, Any]:
  embed, params = summary['config']['model']['embed'], summary['params']
  kind = embed['kind']
  return {
      'run': run, 'kind': kind, 'head': embed['head'],
      'rank': None if kind == 'dense' else int(embed['rank']),
      'embedding_params': params['embedding'], 'total_params': params['total'],
      'valid_ppl': summary.get('valid_ppl'), 'test_ppl': summary.get('test_ppl'),
      'tokens_per_s': summary.get('tokens_per_s'),
      '_full_rank': min(summary['vocab_size'], summary['config']['model']['model_dim']),
  }


def _posthoc_rows(run: str, run_dir: pathlib.Path) -> list[dict[str, Any]]:
  rows: dict[tuple, dict] = {}
  for split in ('valid', 'test'):
    path = run_dir / POSTHOC_FILE.format(split=split)
    if not path.exists():
      continue
    result = json.loads(path.read_text())
    series = [('posthoc_svd', result['ppl_by_rank'])]
    if result.get('finetuned_ppl_by_rank'):
      series.append((f'posthoc_svd_ft{result["finetune_steps"]}',
                     result['finetuned_ppl_by_rank']))
    for kind, ppl_by_rank in series:
      for rank, ppl in ppl_by_rank.items():
        params = result['params_by_rank'][rank]
        row = rows.setdefault((kind, int(rank)), {
            'run': run, 'kind': kind, 'head': result['head'], 'rank': int(rank),
            'embedding_params': params['embedding'], 'total_params': params['total'],
            'valid_ppl': None, 'test_ppl': None, 'tokens_per_s': None})
        row[f'{split}_ppl'] = ppl
  return list(rows.values())


def _sort_key(row: dict) -> tuple:
  kind = row['kind']
  base = 'posthoc_svd' if kind.startswith('posthoc_svd') else kind
  order = _KIND_ORDER.index(base) if base in _KIND_ORDER else len(_KIND_ORDER)
  return (row['head'] != 'tied', order, kind, row['rank'] or 0, row['run'])


def collect_rows(sweep_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
  """The table's rows (sorted by head, kind, rank) and the runs without a summary yet."""
  rows, unfinished = [], []
  for run_dir in _run_dirs(pathlib.Path(sweep_dir)):
    summary_path = run_dir / 'summary.json'
    if summary_path.exists():
      rows.append(_summary_row(run_dir.name, json.loads(summary_path.read_text())))
    elif (run_dir / 'config.json').exists():
      unfinished.append(run_dir.name)
    rows.extend(_posthoc_rows(run_dir.name, run_dir))
  return sorted(rows, key=_sort_key), unfinished


def series_name(row: dict) -> str:
  """The curve a row belongs to: its kind, `_untied` appended for an untied head."""
  return row['kind'] + ('_untied' if row['head'] == 'untied' else '')


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _format(column: str, value) -> str:
  if value is None:
    return '-'
  if column in ('embedding_params', 'total_params'):
    return f'{value:,}'
  if column.endswith('_ppl'):
    return f'{value:.2f}' if _is_number(value) else str(value)
  if column == 'tokens_per_s':
    return f'{value:,.0f}'
  return str(value)


def markdown_table(rows: list[dict], unfinished: list[str]) -> str:
  """The rows as a Markdown table, then the runs that have not finished."""
  lines = ['| ' + ' | '.join(_HEADERS) + ' |', '|' + '---|' * len(_HEADERS)]
  for row in rows:
    lines.append('| ' + ' | '.join(_format(c, row[c]) for c in COLUMNS) + ' |')
  if unfinished:
    lines += ['', f'Not finished (no summary.json yet): {", ".join(unfinished)}.']
  return '\n'.join(lines) + '\n'


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _csv_bytes(rows: list[dict]) -> bytes:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(COLUMNS)
  for row in rows:
    writer.writerow(['' if row[c] is None else row[c] for c in COLUMNS])
  return out.getvalue().encode()


def _curves(rows: list[dict]) -> dict[str, list[dict]]:
  curves: dict[str, list[dict]] = {}
  for row in rows:
    if row['rank'] is not None:
      curves.setdefault(series_name(row), []).append(row)
  return {name: sorted(points, key=lambda r: r['rank']) for name, points in curves.items()}


def plot_ppl_vs_rank(rows: list[dict]) -> bytes:
  """ppl_vs_rank.png: ppl against rank (log axis) per series, dense runs as horizontal lines."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import NullFormatter, ScalarFormatter

  figure = Figure(figsize=(7, 4.5), dpi=120)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  ranks = set()
  for name, points in _curves(rows).items():
    metric = 'test_ppl' if any(_is_number(r['test_ppl']) for r in points) else 'valid_ppl'
    xy = [(r['rank'], r[metric]) for r in points if _is_number(r[metric])]
    if not xy:
      continue
    ranks.update(x for x, _ in xy)
    label = name if metric == 'test_ppl' else f'{name} (valid)'
    style = '--' if name.startswith('posthoc_svd') else '-'
    axes.plot(*zip(*xy, strict=True), style, marker='o', label=label)
  for row in rows:
    if row['rank'] is None:
      metric = 'test_ppl' if _is_number(row['test_ppl']) else 'valid_ppl'
      if _is_number(row[metric]):
        name = series_name(row)
        axes.axhline(row[metric], color='gray', linestyle=':',
                     label=name if name == row['run'] else f'{name} ({row["run"]})')
  if ranks:
    axes.set_xscale('log', base=2)
    axes.set_xticks(sorted(ranks))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
  axes.set_xlabel('embedding rank (E for albert, R for svd)')
  axes.set_ylabel('test perplexity')
  axes.set_title('Perplexity versus embedding rank')
  axes.grid(True, alpha=0.3)
  if axes.get_legend_handles_labels()[0]:
    axes.legend(fontsize='small')
  figure.tight_layout()
  out = io.BytesIO()
  figure.savefig(out, format='png')
  return out.getvalue()


def write_tensorboard_run(rows: list[dict], sweep_dir: str | os.PathLike) -> None:
  """Rewrites the `sweep` run: ppl_vs_rank/* and ppl_vs_embedding_params/* scalars."""
  from tensorboardX import SummaryWriter

  run_dir = pathlib.Path(sweep_dir) / SWEEP_RUN
  run_dir.mkdir(exist_ok=True)
  for old in run_dir.glob('events.out.tfevents*'):
    old.unlink()
  curves = _curves(rows)
  for row in rows:
    if row['rank'] is None:  # dense: at its table's full rank
      curves.setdefault(series_name(row), []).append({**row, 'rank': row['_full_rank']})
  writer = SummaryWriter(logdir=str(run_dir))
  try:
    for name, points in sorted(curves.items()):
      for axis, step_key in (('rank', 'rank'), ('embedding_params', 'embedding_params')):
        for prefix, metric in (('', 'test_ppl'), ('valid_', 'valid_ppl')):
          for row in sorted(points, key=lambda r: r[step_key]):
            if _is_number(row[metric]):
              writer.add_scalar(f'{prefix}ppl_vs_{axis}/{name}', row[metric],
                                global_step=int(row[step_key]))
  finally:
    writer.close()


def write_reports(sweep_dir: str | os.PathLike) -> str:
  """(Re)writes summary.csv, summary.md, ppl_vs_rank.png and the `sweep` run; returns the
  Markdown table."""
  root = pathlib.Path(sweep_dir)
  rows, unfinished = collect_rows(root)
  table = markdown_table(rows, unfinished)
  _write_atomic(root / CSV_FILE, _csv_bytes(rows))
  _write_atomic(root / MD_FILE, table.encode())
  _write_atomic(root / PNG_FILE, plot_ppl_vs_rank(rows))
  write_tensorboard_run(rows, root)
  return table


def refresh_parent_reports(workdir: str | os.PathLike) -> str | None:
  """Rewrites the reports of the sweep that `workdir` belongs to (its parent holds
  summary.csv); returns the parent's path, or None when it is not a sweep directory."""
  parent = pathlib.Path(workdir).resolve().parent
  if not (parent / CSV_FILE).exists():
    return None
  write_reports(parent)
  return str(parent)
