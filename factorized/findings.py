r"""What a finished Brown sweep shows: the README's "Results on Brown" section, generated.

`render(sweep_dir)` reads only what is committed under `results/brown/` (each point's
summary.json and the post-hoc JSONs, through sweep_report, and `machine.json`) and writes
the section's Markdown: the table over seeds, the smallest ranks within 2% and 5% of dense,
post-hoc SVD against training factorized from scratch, tied against untied heads, the
frequency bands that pay for a low rank, and what is within seed noise. The README holds
it between the two markers below; regenerate it with

  python -m factorized.findings results/brown --readme=README.md

and tests/test_findings.py fails when the README's copy differs from the data.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import pandas as pd

from factorized import sweep_report

BEGIN = ('<!-- results:brown begin: generated from results/brown by `python -m '
         'factorized.findings results/brown --readme=README.md`; do not edit by hand -->')
END = '<!-- results:brown end -->'
MACHINE_FILE = 'machine.json'
THRESHOLDS = (0.02, 0.05)
FINETUNED = 'posthoc_svd_ft'  # + steps: the fine-tuned post-hoc rows' kind


def _ppl(value: float) -> str:
  return f'{value:.1f}' if isinstance(value, float) and math.isfinite(value) else '-'


def _mean_std(row: pd.Series, metric: str = 'test_ppl') -> str:
  mean, std = row[f'{metric}_mean'], row[f'{metric}_std']
  if not math.isfinite(mean):
    return '-'
  return f'{mean:.1f} ± {std:.1f}' if math.isfinite(std) else f'{mean:.1f}'


def _tables(sweep_dir: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame]:
  rows, _ = sweep_report.collect_rows(sweep_dir)
  table = sweep_report.rows_table(rows)
  groups = sweep_report.aggregate(table)
  groups['rank'] = groups['rank'].astype('Int64')
  return table, groups


def _pick(groups: pd.DataFrame, kind: str, head: str = 'tied', rank=None) -> pd.Series | None:
  chosen = groups[(groups['kind'] == kind) & (groups['head'] == head)]
  chosen = chosen[chosen['rank'].isna()] if rank is None else chosen[chosen['rank'] == rank]
  return None if chosen.empty else chosen.iloc[0]


def _factorized_kinds(groups: pd.DataFrame) -> list[str]:
  """The trained factorizations (albert, svd, ...): not dense, its fine-tune control or
  post-hoc rows."""
  return [k for k in dict.fromkeys(groups['kind'])
          if k != 'dense' and not k.startswith(('dense_ft', 'posthoc_svd'))]


def _summary_table(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  lines = ['| kind | head | rank | seeds | vocab params | test ppl | vs dense | valid ppl |',
           '|---|---|---:|---:|---:|---:|---:|---:|']
  for _, row in groups.iterrows():
    ratio = row['test_ppl_mean'] / dense['test_ppl_mean'] - 1
    rank = '' if pd.isna(row['rank']) else str(int(row['rank']))
    lines.append(f'| {row["kind"]} | {row["head"]} | {rank} | {row["seeds"]} | '
                 f'{int(row["vocab_params"]):,} | {_mean_std(row)} | {100 * ratio:+.1f}% | '
                 f'{_mean_std(row, "valid_ppl")} |')
  return lines


def _thresholds(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  lines = []
  for kind in _factorized_kinds(groups):
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')].dropna(
        subset=['rank']).sort_values('rank')
    if points.empty:
      continue
    parts = []
    for threshold in THRESHOLDS:
      within = points[points['test_ppl_mean'] <= (1 + threshold) * dense['test_ppl_mean']]
      if within.empty:
        parts.append(f'never within {threshold:.0%} up to rank {int(points["rank"].max())} '
                     f'(best {points["test_ppl_mean"].min():.1f} at rank '
                     f'{int(points.loc[points["test_ppl_mean"].idxmin(), "rank"])})')
      else:
        first = within.iloc[0]
        parts.append(f'within {threshold:.0%} from rank {int(first["rank"])} '
                     f'({first["test_ppl_mean"]:.1f}, {int(first["vocab_params"]):,} vocab '
                     'parameters)')
    lines.append(f'- **{kind}**: ' + '; '.join(parts) + '.')
  return lines


def _seeded(groups: pd.DataFrame) -> pd.DataFrame:
  return groups[(groups['seeds'] > 1) & (groups['head'] == 'tied')]


def _pooled_std(groups: pd.DataFrame) -> float:
  """The pooled sample std of test perplexity over the seeded tied points (NaN if none):
  differences under twice it are within seed noise."""
  seeded = _seeded(groups)
  return float(seeded['test_ppl_std'].pow(2).mean() ** 0.5) if not seeded.empty else math.nan


def _noise(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  seeded = _seeded(groups)
  if seeded.empty:
    return ['- Seed noise: no point has more than one seed yet.']
  stds = ', '.join(
      f'{row["kind"]}{"" if pd.isna(row["rank"]) else " " + str(int(row["rank"]))} '
      f'±{row["test_ppl_std"]:.1f} ({row["seeds"]} seeds)' for _, row in seeded.iterrows())
  pooled = _pooled_std(groups)
  close = groups[(groups['head'] == 'tied') &
                 ((groups['test_ppl_mean'] - dense['test_ppl_mean']).abs() < 2 * pooled)]
  close = [f'{r["kind"]} {int(r["rank"])}' for _, r in close.iterrows()
           if not pd.isna(r['rank']) and r['kind'] in _factorized_kinds(groups)]
  return [f'- Seed noise (sample std of test perplexity over seeds): {stds}; pooled '
          f'±{pooled:.1f}. Differences from dense under twice that ({2 * pooled:.1f}) are '
          'within seed noise' + (f': {", ".join(close)}.' if close else '; no factorized '
                                 'point is that close.')]


def _posthoc(groups: pd.DataFrame) -> list[str]:
  posthoc = groups[groups['kind'] == 'posthoc_svd'].dropna(subset=['rank'])
  if posthoc.empty:
    return ['Post-hoc SVD has not been run on the dense point yet.']
  finetuned = [k for k in dict.fromkeys(groups['kind']) if k.startswith(FINETUNED)]
  control = [k for k in dict.fromkeys(groups['kind']) if k.startswith('dense_ft')]
  header = ['rank', 'vocab params', 'post-hoc SVD', *[f'post-hoc + {k[12:]}' for k in finetuned],
            'svd from scratch']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---:|' * len(header)]
  for _, row in posthoc.sort_values('rank').iterrows():
    rank = int(row['rank'])
    cells = [str(rank), f'{int(row["vocab_params"]):,}', _ppl(row['test_ppl_mean'])]
    for kind in finetuned:
      tuned = _pick(groups, kind, rank=rank)
      cells.append(_ppl(tuned['test_ppl_mean']) if tuned is not None else '-')
    scratch = _pick(groups, 'svd', rank=rank)
    cells.append(_mean_std(scratch) if scratch is not None else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  reading = [_against_scratch(groups, posthoc, 'posthoc_svd', 'Truncating the trained dense '
                              'table (no fine-tuning)')]
  reading += [_against_scratch(groups, posthoc, kind, f'With {kind[len(FINETUNED):]} '
                               'fine-tuning steps, post-hoc SVD') for kind in finetuned]
  dense = _pick(groups, 'dense')
  for kind in control:
    row = _pick(groups, kind)
    if row is not None and dense is not None:
      change = row['test_ppl_mean'] / dense['test_ppl_mean'] - 1
      reading.append(
          f'Compute-matched control: the dense model fine-tuned the same {kind[8:]} steps '
          f'({kind}) reaches {_ppl(row["test_ppl_mean"])} against {_mean_std(dense)} '
          f'({change:+.1%}), so the extra steps alone '
          + ('do not lower perplexity' if change >= 0 else 'lower it too') + '.')
  return lines + [''] + [f'- {line}' for line in reading if line]


def _against_scratch(groups: pd.DataFrame, posthoc: pd.DataFrame, kind: str, subject: str
                     ) -> str:
  """Where the post-hoc `kind` rows beat or lose to svd trained from scratch at the same
  rank, and by how much (relative test perplexity)."""
  better, worse, noise = [], [], 2 * _pooled_std(groups)
  for rank in sorted(int(r) for r in posthoc['rank']):
    row, scratch = _pick(groups, kind, rank=rank), _pick(groups, 'svd', rank=rank)
    if row is None or scratch is None:
      continue
    difference = row['test_ppl_mean'] - scratch['test_ppl_mean']
    gap = f'{difference / scratch["test_ppl_mean"]:+.1%}'
    if abs(difference) < noise:
      gap += ', within seed noise'
    (better if difference < 0 else worse).append(f'{rank} ({gap})')
  if not better and not worse:
    return ''
  parts = []
  if better:
    parts.append(f'beats svd trained from scratch at rank {", ".join(better)}')
  if worse:
    parts.append(f'{"and loses" if better else "loses to svd trained from scratch"} at rank '
                 f'{", ".join(worse)}')
  return f'{subject} {" ".join(parts)}.'


def _heads(groups: pd.DataFrame) -> list[str]:
  untied = groups[groups['head'] == 'untied']
  if untied.empty:
    return ['No untied point has finished yet.']
  lines = ['| kind | rank | tied: vocab params | tied: test ppl | untied: vocab params | '
           'untied: test ppl |', '|---|---:|---:|---:|---:|---:|']
  gaps = []
  for _, row in untied.iterrows():
    rank = None if pd.isna(row['rank']) else int(row['rank'])
    tied = _pick(groups, row['kind'], rank=rank)
    lines.append(f'| {row["kind"]} | {"" if rank is None else rank} | '
                 + (f'{int(tied["vocab_params"]):,} | {_mean_std(tied)}' if tied is not None
                    else '- | -')
                 + f' | {int(row["vocab_params"]):,} | {_mean_std(row)} |')
    if tied is not None:
      name = row['kind'] + ('' if rank is None else f' {rank}')
      gaps.append(f'{name} {row["test_ppl_mean"] / tied["test_ppl_mean"] - 1:+.1%} for '
                  f'{int(row["vocab_params"] - tied["vocab_params"]):,} more parameters')
  if gaps:
    lines += ['', '- Untying the head changes test perplexity by: ' + '; '.join(gaps) + '.']
  return lines


def _bands(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  bands = [c[:-5] for c in groups.columns
           if c.startswith(sweep_report.BAND_PREFIX) and c.endswith('_mean')]
  if not bands:
    return []
  # Backquoted: a bare <unk> is an HTML tag to Markdown renderers, and vanishes.
  names = [f'`{b.removeprefix(sweep_report.BAND_PREFIX)}`' for b in bands]
  lines = ['Test perplexity by frequency band of the target (rank in train-split '
           'frequency), as a ratio to dense:', '',
           '| kind | rank | ' + ' | '.join(names) + ' |', '|---|---:|' + '---:|' * len(names)]
  findings = []
  kinds = [k for k in _factorized_kinds(groups)
           if not groups[(groups['kind'] == k) & (groups['head'] == 'tied')].empty]
  if not kinds:
    return []
  for kind in kinds:
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')].dropna(
        subset=['rank']).sort_values('rank')
    for _, row in points.iterrows():
      ratios = [row[f'{b}_mean'] / dense[f'{b}_mean'] for b in bands]
      lines.append(f'| {kind} | {int(row["rank"])} | '
                   + ' | '.join(f'{r:.2f}' for r in ratios) + ' |')
    if not points.empty:
      low = points.iloc[0]
      ratios = {n: low[f'{b}_mean'] / dense[f'{b}_mean'] for n, b in zip(names, bands,
                                                                           strict=True)}
      worst = max(ratios, key=ratios.get)
      findings.append(f'{kind} at rank {int(low["rank"])} pays most in band {worst} '
                      f'(×{ratios[worst]:.2f}); the 100 most frequent types change by '
                      f'×{ratios.get("`1-100`", math.nan):.2f}')
  return lines + ([''] + [f'- {f}.' for f in findings] if findings else [])


def _machine(sweep_dir: pathlib.Path, table: pd.DataFrame) -> list[str]:
  path = sweep_dir / MACHINE_FILE
  machine = json.loads(path.read_text()) if path.exists() else {}
  walls = []
  for run in table['run'].unique():
    summary = sweep_dir / run / 'summary.json'
    if summary.exists():
      walls.append(json.loads(summary.read_text())['wall_time_s'])
  text = [f'Machine: {machine.get("description", "not recorded")}.']
  if walls:
    points = f'{len(walls)} trained point' + ('s' if len(walls) > 1 else '')
    text.append(f'{points}, {sum(walls) / 3600:.1f} hours of training in all '
                f'({min(walls) / 60:.0f}–{max(walls) / 60:.0f} minutes a point, '
                'evaluations included).')
  if machine.get('note'):
    text.append(machine['note'])
  return [' '.join(text)]


def render(sweep_dir: str | pathlib.Path) -> str:
  """The README section (between BEGIN and END) for the sweep in `sweep_dir`."""
  root = pathlib.Path(sweep_dir)
  table, groups = _tables(root)
  dense = _pick(groups, 'dense')
  if dense is None:
    raise ValueError(f'{root}: no tied dense point has finished; nothing to compare with.')
  sections = [
      BEGIN, '',
      f'Every number below is read from `{root.as_posix()}/` (one directory per point with its '
      '`summary.json` and `config.json`; the dense point also holds the post-hoc JSONs), '
      'where `summary.md`, `summary.csv`, `aggregate.csv` and the plots are regenerated by '
      f'`python -m factorized.sweep_report {root.as_posix()}`. Test perplexity is the mean ± '
      'sample standard deviation over seeds where a point has several.', '',
      *_summary_table(groups, dense), '',
      f'The dense baseline (tied, {_mean_std(dense)}) is well ahead of the published anchors '
      "on this protocol: Bengio et al. 2003's neural probabilistic LM, 252, and their "
      'Kneser-Ney 5-gram, 321 (JMLR 3, Table 1).', '',
      f'![perplexity against rank]({root.as_posix()}/ppl_vs_rank.png)',
      f'![perplexity against vocabulary parameters]({root.as_posix()}/ppl_vs_vocab_params.png)',
      f'![perplexity per frequency band]({root.as_posix()}/band_ppl_vs_vocab_params.png)',
      '', '**How close each factorization comes to dense** (tied head, test perplexity '
      f'{_mean_std(dense)} for dense):', '', *_thresholds(groups, dense), *_noise(groups, dense),
      '', '**Post-hoc SVD of the trained dense table against training factorized from '
      'scratch**, at equal parameters (same rank):', '', *_posthoc(groups), '',
      '**Tied against untied output heads** (the softmax bottleneck: an untied head keeps a '
      'full-rank D×V output layer whatever the input rank):', '', *_heads(groups), '',
      *_bands(groups, dense), '', *_machine(root, table), '', END]
  return '\n'.join(sections) + '\n'


def replace_section(readme: str, section: str) -> str:
  """`readme` with its text from BEGIN to END replaced by `section`."""
  start, end = readme.find(BEGIN), readme.find(END)
  if start < 0 or end < start:
    raise ValueError(f'README has no results section between the markers {BEGIN!r} and '
                     f'{END!r}; add them where the section belongs.')
  return readme[:start] + section.rstrip('\n') + readme[end + len(END):]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('sweep_dir', help='a finished sweep, e.g. results/brown')
  parser.add_argument('--readme', help='rewrite the section between the markers in this file')
  args = parser.parse_args()
  section = render(args.sweep_dir)
  if args.readme:
    path = pathlib.Path(args.readme)
    path.write_text(replace_section(path.read_text(), section))
    print(f'{path}: results section rewritten from {args.sweep_dir}')
  else:
    print(section)


if __name__ == '__main__':
  main()
