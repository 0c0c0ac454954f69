r"""What a finished Brown sweep shows: the README's "Results on Brown" section, generated.

`render(sweep_dir)` reads only what is committed under `results/brown/` (each point's
summary.json and the post-hoc JSONs, through sweep_report, and `machine.json`) and writes
the section's Markdown: the table over seeds, the smallest compressions within 2% and 5% of
dense, post-hoc SVD against training factorized from scratch and against its own parent,
tied against untied heads, a vocabulary budget split between the input and a head of its
own kind and what the input rank x head rank map shows, the tuned learning rates and
longer training where they were run, the frequency bands that pay for a low rank, and which
points were still improving.

Noise: a difference between two points is called real only when it exceeds twice its
standard error under seed noise, 2 s sqrt(1/n_a + 1/n_b), with s the pooled sample standard
deviation of test perplexity over every seeded point and n_a, n_b the two sides' seed
counts (1 vs 3 seeds: 2.31 s; 1 vs 1: 2.83 s). A post-hoc row is compared with the dense run
it compresses (its parent, one seed), never with the mean over dense seeds. A point with at
least dense's vocabulary parameters (svd or albert at rank >= D) is never called a
compression. The main table and the plots show the grid's own settings (each swept field at
its most common value); tuned learning rates and longer runs have their own paragraphs. The
README holds the section between the two markers below; regenerate it with

  python -m factorized.analysis.findings results/brown --readme=README.md

and tests/test_findings.py fails when the README's copy differs from the data.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import pandas as pd

from factorized import embeddings
from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table

_GENERATED = ('generated from results/brown by `python -m factorized.analysis.findings '
              'results/brown --readme=README.md`; do not edit by hand')
FINDINGS_FILE = 'README.md'  # the full findings, in the sweep directory itself
FINDINGS_HEADER = f'# Results on Brown\n\n<!-- {_GENERATED} -->\n'
BEGIN = f'<!-- results:brown headline begin: {_GENERATED} -->'  # the README's headline
END = '<!-- results:brown headline end -->'
BUDGET = 0.25  # the headline's vocabulary-parameter budget, a fraction of dense's
BUDGET_SLACK = 0.05  # points up to 5% above it count (the grid's svd 32 is 25.2% of dense)
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


def _tables(sweep_dir: pathlib.Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
  """(every run's rows, the grid's own rows (sweep_table.base_rows), their aggregate)."""
  rows, _ = sweep_table.collect_rows(sweep_dir)
  table = sweep_table.rows_table(rows)
  base = sweep_table.base_rows(table)
  groups = sweep_table.aggregate(base)
  groups['rank'] = groups['rank'].astype('Int64')
  return table, base, groups


def pooled_std(groups: pd.DataFrame) -> float:
  """s: the pooled sample std of test perplexity over the seeded points (NaN if none)."""
  seeded = groups[groups['seeds'] > 1]
  if seeded.empty:
    return math.nan
  weights = seeded['seeds'] - 1  # degrees of freedom
  return float((weights * seeded['test_ppl_std'] ** 2).sum() / weights.sum()) ** 0.5


def noise_threshold(std: float, *seed_counts: int) -> float:
  """The smallest sum or difference of means over these seed counts called real: twice its
  standard error, 2 s sqrt(1/n_a + 1/n_b) for two means (four for a change of a gap)."""
  return 2 * std * math.sqrt(sum(1 / n for n in seed_counts))


def _within_noise(difference: float, threshold: float) -> str:
  """'' when `difference` is beyond `threshold`, else ', within seed noise (±T)', or
  ', untested for seed noise' when no point has seeds (T is NaN)."""
  if not math.isfinite(threshold):
    return ', untested for seed noise'
  return f', within seed noise ±{threshold:.1f}' if abs(difference) <= threshold else ''


def compare(a: float, seeds_a: int, b: float, seeds_b: int, std: float) -> str:
  """'+3.5%' (a against b), with ', within seed noise (±T)' when |a - b| <= T, the
  noise_threshold of the two seed counts, or ', untested' when no point has seeds."""
  return f'{a / b - 1:+.1%}' + _within_noise(a - b, noise_threshold(std, seeds_a, seeds_b))


def _versus(row: pd.Series, other: pd.Series, std: float) -> str:
  """compare() of two aggregated points' test perplexity, each with its seed count."""
  return compare(row['test_ppl_mean'], row['seeds'], other['test_ppl_mean'], other['seeds'],
                 std)


def _pick(groups: pd.DataFrame, kind: str, head: str = 'tied', rank=None) -> pd.Series | None:
  chosen = groups[(groups['kind'] == kind) & (groups['head'] == head)]
  chosen = chosen[chosen['rank'].isna()] if rank is None else chosen[chosen['rank'] == rank]
  return None if chosen.empty else chosen.iloc[0]


def _factorized_kinds(groups: pd.DataFrame) -> list[str]:
  """The trained factorizations (albert, svd, ...): not dense, its fine-tune control or
  post-hoc rows."""
  return [k for k in dict.fromkeys(groups['kind'])
          if k != 'dense' and not k.startswith(('dense_ft', 'posthoc_svd'))]


def _derived(kind: str) -> bool:
  """A row computed from a trained dense run (post-hoc SVD, the fine-tuned control)."""
  return kind.startswith(('posthoc_svd', 'dense_ft'))


def _parent_ppl(table: pd.DataFrame, kind: str, rank) -> tuple[str, float] | None:
  """(run, test ppl) of the dense run a derived row (`kind`, `rank`) was computed from."""
  rows = table[(table['kind'] == kind)
               & (table['rank'].isna() if pd.isna(rank) else table['rank'] == rank)]
  if rows.empty:
    return None
  run = rows['run'].iloc[0]
  parent = table[(table['run'] == run) & (table['kind'] == 'dense')]
  return None if parent.empty else (run, float(parent['test_ppl'].iloc[0]))


def _summary_table(table: pd.DataFrame, groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  lines = ['| kind | head | rank | seeds | vocab params | test ppl | vs dense | valid ppl |',
           '|---|---|---:|---:|---:|---:|---:|---:|']
  for _, row in groups.iterrows():
    ratio = f'{row["test_ppl_mean"] / dense["test_ppl_mean"] - 1:+.1%}'
    parent = _parent_ppl(table, row['kind'], row['rank']) if _derived(row['kind']) else None
    if parent is not None:  # against the run it was computed from, not the seeds' mean
      ratio = f'{row["test_ppl_mean"] / parent[1] - 1:+.1%} vs {parent[0]}'
    rank = '' if pd.isna(row['rank']) else str(int(row['rank']))
    lines.append(f'| {row["kind"]} | {sweep_table.head_label(row)} | {rank} | {row["seeds"]} | '
                 f'{int(row["vocab_params"]):,} | {_mean_std(row)} | {ratio} | '
                 f'{_mean_std(row, "valid_ppl")} |')
  return lines


def _thresholds(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  lines = []
  for kind in _factorized_kinds(groups):
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')].dropna(
        subset=['rank']).sort_values('rank')
    full = points[points['vocab_params'] >= dense['vocab_params']]
    points = points[points['vocab_params'] < dense['vocab_params']]  # compressions only
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
    if not full.empty:
      parts.append(f'rank {", ".join(str(int(r)) for r in full["rank"])} has at least '
                   "dense's vocabulary parameters (no compression)")
    lines.append(f'- **{kind}**: ' + '; '.join(parts) + '.')
  return lines


def _noise(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  seeded = groups[(groups['seeds'] > 1) & (groups['head'] == 'tied')]
  if seeded.empty:
    return ['- Seed noise: no point has more than one seed yet.']
  stds = ', '.join(
      f'{row["kind"]}{"" if pd.isna(row["rank"]) else " " + str(int(row["rank"]))} '
      f'±{row["test_ppl_std"]:.1f} ({row["seeds"]} seeds)' for _, row in seeded.iterrows())
  std = pooled_std(groups)
  close = []
  for _, row in groups[groups['head'] == 'tied'].iterrows():
    if (row['kind'] in _factorized_kinds(groups) and not pd.isna(row['rank'])
        and row['vocab_params'] < dense['vocab_params']):  # compressions only
      threshold = noise_threshold(std, row['seeds'], dense['seeds'])
      if abs(row['test_ppl_mean'] - dense['test_ppl_mean']) <= threshold:
        close.append(f'{row["kind"]} {int(row["rank"])} ({row["seeds"]} seed'
                     f'{"s" if row["seeds"] > 1 else ""}, ±{threshold:.1f})')
  return [f'- Seed noise (sample std of test perplexity over seeds): {stds}; pooled '
          f's = {std:.1f}. A difference is called real only beyond 2 s sqrt(1/n_a + 1/n_b) '
          f'for the two sides\' seed counts (against the {dense["seeds"]}-seed dense mean: '
          f'{noise_threshold(std, 1, dense["seeds"]):.1f} for one seed, '
          f'{noise_threshold(std, 3, dense["seeds"]):.1f} for three). Compressions within seed '
          'noise of dense' + (f': {", ".join(close)}.' if close else ': none.')]


def _posthoc(table: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
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
  dense = _pick(groups, 'dense')
  full_rank = (posthoc['vocab_params'] >= dense['vocab_params']) if dense is not None else False
  compressed = posthoc[~full_rank] if dense is not None else posthoc
  reading = [_against_scratch(groups, compressed, 'posthoc_svd', 'Truncating the trained '
                              'dense table (no fine-tuning)')]
  reading += [_against_scratch(groups, compressed, kind, f'With {kind[len(FINETUNED):]} '
                               'fine-tuning steps, post-hoc SVD') for kind in finetuned]
  for kind in control:
    row, parent = _pick(groups, kind), _parent_ppl(table, kind, None)
    if row is None or parent is None:
      continue
    change = row['test_ppl_mean'] / parent[1] - 1
    reading.append(
        f'Compute-matched control: its parent {parent[0]} fine-tuned the same {kind[8:]} '
        f'steps ({kind}) reaches {_ppl(row["test_ppl_mean"])} against its own '
        f'{_ppl(parent[1])} ({change:+.1%}), so the extra steps alone '
        + ('do not lower perplexity' if change >= 0 else 'lower it too') + '.')
    steps = kind[len('dense_ft'):]
    whole = posthoc[full_rank] if dense is not None else posthoc.iloc[:0]
    tuned = [_pick(groups, f'{FINETUNED}{steps}', rank=int(r)) for r in whole['rank']]
    for rank, fine in zip(whole['rank'], tuned, strict=True):
      if fine is not None:
        own = fine['test_ppl_mean'] / parent[1] - 1
        reading.append(
            f'The svd parameterisation itself costs the fine-tuned rows about '
            f'{own - change:.1%}: at rank {int(rank)} nothing is truncated (post-hoc SVD '
            f'is the same function as {parent[0]}), yet {steps} fine-tuning steps in svd form '
            f'end {own:+.1%} from the parent, against {change:+.1%} for the dense control.')
  if dense is not None and not posthoc[full_rank].empty:
    reading.append('Rank ' + ', '.join(str(int(r)) for r in posthoc[full_rank]['rank'])
                   + " keeps at least dense's vocabulary parameters: no compression, "
                   'left out of the comparisons with svd from scratch.')
  return lines + [''] + [f'- {line}' for line in reading if line]


def _against_scratch(groups: pd.DataFrame, posthoc: pd.DataFrame, kind: str, subject: str
                     ) -> str:
  """Where the post-hoc `kind` rows beat or lose to svd trained from scratch at the same
  rank, and by how much (relative test perplexity)."""
  better, worse, std = [], [], pooled_std(groups)
  for rank in sorted(int(r) for r in posthoc['rank']):
    row, scratch = _pick(groups, kind, rank=rank), _pick(groups, 'svd', rank=rank)
    if row is None or scratch is None:
      continue
    gap = _versus(row, scratch, std)
    (better if row['test_ppl_mean'] < scratch['test_ppl_mean'] else worse).append(
        f'{rank} ({gap})')
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
      gap = _versus(row, tied, pooled_std(groups))
      gaps.append(f'{name} {gap} for {int(row["vocab_params"] - tied["vocab_params"]):,} more '
                  'parameters')
  if gaps:
    lines += ['', '- Untying the head changes test perplexity by: ' + '; '.join(gaps) + '.']
  return lines


def _bands(groups: pd.DataFrame, dense: pd.Series) -> list[str]:
  bands = [c[:-5] for c in groups.columns
           if c.startswith(sweep_table.BAND_PREFIX) and c.endswith('_mean')]
  if not bands:
    return []
  # Backquoted: a bare <unk> is an HTML tag to Markdown renderers, and vanishes.
  names = [f'`{b.removeprefix(sweep_table.BAND_PREFIX)}`' for b in bands]
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


def _tuned(table: pd.DataFrame, groups: pd.DataFrame, root: pathlib.Path) -> list[str]:
  """The tuned learning rates (sweep_table.tuned), where several were run, each against dense
  at its own tuned rate (or the grid's, where dense has none) with the noise test."""
  chosen = sweep_table.tuned(table)
  if chosen.empty:
    return []
  tuned_dense = chosen[(chosen['kind'] == 'dense') & (chosen['head'] == 'tied')]
  dense = tuned_dense.iloc[0] if not tuned_dense.empty else _pick(groups, 'dense')
  std = pooled_std(groups)
  lines = ['**Learning rate per kind** (train.lr of lowest best-valid perplexity, compared on '
           'the seeds every rate has; the test split chooses nothing):', '',
           '| kind | head | rank | tuned lr | tried | test ppl at it | at the grid\'s lr | '
           f'against dense at lr {dense[sweep_table.TUNED]:g} |',
           '|---|---|---:|---:|---|---:|---:|---|']
  edges = []
  for _, row in chosen.iterrows():
    rank = None if pd.isna(row['rank']) else int(row['rank'])
    grid = _pick(groups, row['kind'], row['head'], rank)
    gap = '' if row['kind'] == 'dense' and row['head'] == 'tied' else _versus(row, dense, std)
    lines.append(f'| {row["kind"]} | {row["head"]} | {"" if rank is None else rank} | '
                 f'{row[sweep_table.TUNED]:g} | {row["tried"]} | {_mean_std(row)} | '
                 f'{_mean_std(grid) if grid is not None else "-"} | {gap} |')
    if row['at_edge']:
      edges.append(f'{row["kind"]}{"" if rank is None else f" {rank}"}')
  if edges:
    lines += ['', f'- The best rate is at the edge of those tried for {", ".join(edges)}: '
              'the range should widen there.']
  if (root / sweep_report.TUNING_PNG_FILE).exists():
    lines += ['', f'![best valid perplexity against the learning rate]'
              f'({sweep_report.TUNING_PNG_FILE})']
  return lines + ['']


def _by_steps(table: pd.DataFrame) -> tuple[list, pd.DataFrame] | None:
  """(the values of a swept train.num_steps, in order; the tied points at the grid's learning
  rate aggregated at each), or None where train.num_steps was not swept."""
  if 'num_steps' not in table.columns:
    return None
  groups = sweep_table.aggregate(table)
  groups = groups[groups['head'] == 'tied']
  if 'lr' in groups.columns:  # at the grid's learning rate only
    groups = groups[groups['lr'].map(repr) == table['lr'].map(repr).mode().iloc[0]]
  steps = sorted(groups['num_steps'].dropna().unique())
  return (steps, groups) if len(steps) > 1 else None


def _longer(table: pd.DataFrame, root: pathlib.Path) -> list[str]:
  """The gap to dense after more steps (a swept train.num_steps), per kind and rank: the
  table, whether the gap moved (the change of the perplexity gap against its own seed
  noise, 2 s sqrt of the four sides' 1/n summed) and which of the longest runs were still
  improving."""
  by_steps = _by_steps(table)
  if by_steps is None:
    return []
  steps, groups = by_steps
  std = pooled_std(groups)
  lines = [f'**Longer training** (train.num_steps {" against ".join(map(str, steps))}, '
           'everything else equal; test perplexity and the gap to dense at the same steps):',
           '', '| kind | rank | ' + ' | '.join(f'{n} steps' for n in steps) + ' |',
           '|---|---:|' + '---:|' * len(steps)]
  dense_at = {n: _pick(groups[groups['num_steps'] == n], 'dense') for n in steps}
  lines.append('| dense | | ' + ' | '.join(
      '-' if dense_at[n] is None else _mean_std(dense_at[n]) for n in steps) + ' |')
  moves = []
  for (kind, rank), points in groups.groupby(['kind', 'rank'], dropna=False, sort=False):
    if kind == 'dense' or _derived(kind) or len(points) < 2:
      continue
    cells, at = [], {}
    for n in steps:
      point = points[points['num_steps'] == n]
      base = dense_at[n]
      if point.empty or base is None:
        cells.append('-')
        continue
      at[n] = (point.iloc[0], base)
      cells.append(f'{_mean_std(point.iloc[0])} ({_versus(point.iloc[0], base, std)})')
    lines.append(f'| {kind} | {"" if pd.isna(rank) else int(rank)} | ' + ' | '.join(cells)
                 + ' |')
    if steps[0] in at and steps[-1] in at:
      (first, first_dense), (last, last_dense) = at[steps[0]], at[steps[-1]]
      before = first['test_ppl_mean'] - first_dense['test_ppl_mean']
      after = last['test_ppl_mean'] - last_dense['test_ppl_mean']
      threshold = noise_threshold(std, *(row['seeds'] for row in (
          first, first_dense, last, last_dense)))
      moves.append(f'{_point(first)} {before:+.1f} → {after:+.1f} ({after - before:+.1f}'
                   f'{_within_noise(after - before, threshold)})')
  lines.append('')
  if moves:
    lines.append(f'- The gap to dense in test perplexity from {steps[0]} to {steps[-1]} steps: '
                 + '; '.join(moves) + '.')
  longest = table[(table['num_steps'] == steps[-1]) & table['kind'].isin(embeddings.KINDS)]
  best = _best_steps(root, longest['run'].unique())
  if best:
    lines.append(f'- Step of best valid perplexity in the {steps[-1]}-step runs (the last one: '
                 'still improving): ' + ', '.join(
                     f'{run} {step}' + (' (the last)' if step == last else '')
                     for run, (step, last) in best.items()) + '.')
  return lines + ['']


def _best_steps(sweep_dir: pathlib.Path, runs) -> dict[str, tuple[int, int]]:
  """Per run of `runs` with a summary.json: (its step of best valid perplexity, its last
  step)."""
  best = {}
  for run in runs:
    path = sweep_dir / run / 'summary.json'
    if path.exists():
      summary = json.loads(path.read_text())
      if summary.get('best_step') is not None:
        best[run] = (summary['best_step'], summary.get('steps'))
  return best


def _improving(sweep_dir: pathlib.Path, table: pd.DataFrame) -> list[str]:
  """Which trained points had their best valid perplexity at their last evaluation."""
  best = _best_steps(sweep_dir, table[table['kind'].isin(embeddings.KINDS)]['run'].unique())
  still = [run for run, (step, last) in best.items() if step == last]
  if not best:
    return []
  if not still:
    return [f'- No point was still improving: each of the {len(best)} has its best valid '
            'perplexity before its last step.']
  return [f'- Still improving at their last step (best valid perplexity at the final '
          f'evaluation): {len(still)} of {len(best)} points'
          + (': all of them.' if len(still) == len(best) else f': {", ".join(still)}.')
          + ' Their ranking after longer training is not known from these runs alone.']


def _machine(sweep_dir: pathlib.Path, table: pd.DataFrame) -> list[str]:
  path = sweep_dir / MACHINE_FILE
  machine = json.loads(path.read_text()) if path.exists() else {}
  walls = []
  for run in table['run'].unique():
    summary = sweep_dir / run / 'summary.json'
    if summary.exists():
      walls.append(json.loads(summary.read_text())['wall_time_s'])
  text = [f'Machine: {machine.get("description", "not recorded")}.']
  for other in machine.get('also', []):
    text.append(f'Trained on {other["description"]} instead: {", ".join(other["points"])}.')
  if walls:
    points = f'{len(walls)} trained point' + ('s' if len(walls) > 1 else '')
    text.append(f'{points}, {sum(walls) / 3600:.1f} hours of training in all '
                f'({min(walls) / 60:.0f}–{max(walls) / 60:.0f} minutes a point, '
                'evaluations included).')
  for key in ('note', 'note_also'):
    if machine.get(key):
      text.append(machine[key])
  return [' '.join(text)]


def _point(row: pd.Series) -> str:
  """'svd 32', 'dense': a point's input kind and rank."""
  return row['kind'] + ('' if pd.isna(row['rank']) else f' {int(row["rank"])}')


def _split(groups: pd.DataFrame, dense: pd.Series, root: pathlib.Path) -> list[str]:
  """How a vocabulary budget near BUDGET of dense's is best split between the input and
  an untied head of its own kind: every point there, best valid first, and the best split
  against the best tied point, against the same budget in one tied table of its input's
  kind and against the other splits, each with the noise test (chosen by valid perplexity;
  the test split chooses nothing)."""
  own = groups[(groups['head'] == 'untied') & (groups['head_kind'] != 'dense')]
  if own.empty:
    return []
  limit = BUDGET * (1 + BUDGET_SLACK) * dense['vocab_params']
  near = groups[(groups['vocab_params'] <= limit) & ~groups['kind'].map(_derived)
                & ((groups['head'] == 'tied') | (groups['head_kind'] != 'dense'))]
  # By valid perplexity; on a tie the smaller point first (the test split chooses nothing).
  near = near.assign(_valid=near['valid_ppl_mean'].astype(float)).sort_values(
      ['_valid', 'vocab_params'], kind='stable')
  std = pooled_std(groups)
  lines = ['**The output head as its own factorization**: every point within '
           f'{BUDGET * (1 + BUDGET_SLACK):.0%} of dense\'s vocabulary parameters '
           f'({int(limit):,}), tied or with an untied head of its own kind, by valid '
           'perplexity (the vocabulary parameters are the input\'s plus the head\'s):', '',
           '| input | head | vocab params | of dense | seeds | valid ppl | test ppl | vs dense |',
           '|---|---|---:|---:|---:|---:|---:|---|']
  for _, row in near.iterrows():
    versus = _versus(row, dense, std)
    lines.append(f'| {_point(row)} | {sweep_table.head_label(row)} | '
                 f'{int(row["vocab_params"]):,} | '
                 f'{row["vocab_params"] / dense["vocab_params"]:.1%} | {row["seeds"]} | '
                 f'{_mean_std(row, "valid_ppl")} | {_mean_std(row)} | {versus} |')
  tied, split = near[near['head'] == 'tied'], near[near['head'] == 'untied']
  if not tied.empty and not split.empty:
    best_tied, best_split = tied.iloc[0], split.iloc[0]
    versus = _versus(best_split, best_tied, std)
    lines += ['', f'- Best split by valid perplexity: input {_point(best_split)}, head '
              f'{sweep_table.head_label(best_split)}: test {_mean_std(best_split)}, {versus} '
              f'against the best tied point there ({_point(best_tied)}, '
              f'{_mean_std(best_tied)}).']
    same = tied[(tied['kind'] == best_split['kind']) & (
        (tied['vocab_params'] - best_split['vocab_params']).abs()
        <= BUDGET_SLACK * best_split['vocab_params'])]
    if not same.empty:
      whole = same.iloc[0]
      versus = _versus(best_split, whole, std)
      lines.append(f'- Against the same budget in one tied {whole["kind"]} table '
                   f'({_point(whole)}, {int(whole["vocab_params"]):,} vocab params, '
                   f'{_mean_std(whole)}): {versus}.')
    others = []
    for _, row in split.iloc[1:].iterrows():
      versus = _versus(best_split, row, std)
      others.append(f'{_point(row)} + {sweep_table.head_label(row).removeprefix("untied ")} '
                    f'({_mean_std(row)}): {versus}')
    if others:
      lines.append('- The best split against the other splits there: ' + '; '.join(others)
                   + '.')
  return [*lines, '']


def _head_map(groups: pd.DataFrame, root: pathlib.Path) -> list[str]:
  """What the input rank x head rank map shows, per pair of input kind and head kind: the
  change from the lowest to the highest head rank at each input rank, from the lowest to
  the highest input rank at each head rank, and (input and head of one kind) the same
  vocabulary parameters spent on the head rather than the input, each with the noise test."""
  own = groups[(groups['head'] == 'untied') & (groups['head_kind'] != 'dense')
               & groups['rank'].notna() & groups['head_rank'].notna()]
  if own.empty:
    return []
  std = pooled_std(groups)

  def change(low: pd.Series, high: pd.Series) -> str:
    return (f'{_mean_std(low)} → {_mean_std(high)} ('
            + _versus(high, low, std) + ')')

  lines = []
  for (kind, head_kind), cells in own.groupby(['kind', 'head_kind'], sort=False):
    cells = cells.assign(rank=cells['rank'].astype(int), head_rank=cells['head_rank'].astype(int))
    reading = []
    for fixed, swept, side, other in (('rank', 'head_rank', 'head', f'input {kind}'),
                                      ('head_rank', 'rank', 'input', f'head {head_kind}')):
      parts = []
      for value, line in cells.sort_values(swept).groupby(fixed, sort=True):
        if len(line) > 1:
          low, high = line.iloc[0], line.iloc[-1]
          parts.append(f'at {other} {value}, {side} rank {low[swept]} → {high[swept]}: '
                       + change(low, high))
      if parts:
        reading.append(f'Raising the {side} rank (test perplexity): ' + '; '.join(parts) + '.')
    if kind == head_kind:  # (a, b) and (b, a) have the same vocabulary parameters
      by_ranks = {(row['rank'], row['head_rank']): row for _, row in cells.iterrows()}
      mirrors = []
      for (rank, head_rank), row in sorted(by_ranks.items()):
        mirror = by_ranks.get((head_rank, rank))
        if rank < head_rank and mirror is not None:
          versus = _versus(row, mirror, std)
          mirrors.append(f'{kind} {rank} + {head_kind} {head_rank} ({_mean_std(row)}) against '
                         f'{kind} {head_rank} + {head_kind} {rank} ({_mean_std(mirror)}): {versus}')
      if mirrors:
        reading.append('The same vocabulary parameters on the head rather than the input '
                       '(input + head): ' + '; '.join(mirrors) + '.')
    if reading:
      lines += [f'**The input rank × head rank map**, {kind} input and {head_kind} head:', '',
                *[f'- {line}' for line in reading], '']
  if (root / sweep_report.HEAD_MAP_FILE).exists():
    lines += ['![test perplexity over input rank and head rank]'
              f'({sweep_report.HEAD_MAP_FILE})', '']
  return lines


def render(sweep_dir: str | pathlib.Path) -> str:
  """The full findings of the sweep in `sweep_dir`: its README.md (FINDINGS_FILE)."""
  root = pathlib.Path(sweep_dir)
  table, base, every = _tables(root)
  # The paragraphs below compare tied heads and the untied dense head; heads of their own
  # kind have theirs (_split).
  groups = every[(every['head'] == 'tied') | (every['head_kind'] == 'dense')]
  dense = _pick(groups, 'dense')
  if dense is None:
    raise ValueError(f'{root}: no tied dense point has finished; nothing to compare with.')
  sections = [
      FINDINGS_HEADER,
      f'Every number below is read from `{root.as_posix()}/` (one directory per point with its '
      '`summary.json` and `config.json`; the dense point also holds the post-hoc JSONs), '
      'where `summary.md`, `summary.csv`, `aggregate.csv` and the plots are regenerated by '
      f'`python -m factorized.analysis.report {root.as_posix()}`. Test perplexity is the mean ± '
      'sample standard deviation over seeds where a point has several.', '',
      *_summary_table(base, every, dense), '',
      f'The dense baseline (tied, {_mean_std(dense)}) is well ahead of the published anchors '
      "on this protocol: Bengio et al. 2003's neural probabilistic LM, 252, and their "
      'Kneser-Ney 5-gram, 321 (JMLR 3, Table 1).', '',
      '![perplexity against rank](ppl_vs_rank.png)',
      '![perplexity against vocabulary parameters](ppl_vs_vocab_params.png)',
      '![perplexity per frequency band](band_ppl_vs_vocab_params.png)',
      '', '**How close each factorization comes to dense** (tied head, test perplexity '
      f'{_mean_std(dense)} for dense):', '', *_thresholds(groups, dense), *_noise(groups, dense),
      '', '**Post-hoc SVD of the trained dense table against training factorized from '
      'scratch**, at equal parameters (same rank):', '', *_posthoc(base, groups), '',
      '**Tied against untied output heads** (the softmax bottleneck: an untied head keeps a '
      'full-rank D×V output layer whatever the input rank):', '', *_heads(groups), '',
      *_split(every, dense, root), *_head_map(every, root),
      *_tuned(table, groups, root), *_longer(table, root), *_bands(groups, dense), '',
      *_improving(root, base), '', *_machine(root, table)]
  return '\n'.join(sections) + '\n'


def render_headline(sweep_dir: str | pathlib.Path) -> str:
  """The README's headline (between BEGIN and END): the perplexity-against-parameters plot
  and, per kind, its point nearest BUDGET of dense's vocabulary parameters (tied head, the
  grid's own settings), against dense with the seed-noise test; where learning rates were
  tuned, also each point at its tuned rate against dense at dense's; where train.num_steps
  was swept, each point at the most steps against dense at as many."""
  root = pathlib.Path(sweep_dir)
  table, base, groups = _tables(root)
  dense = _pick(groups, 'dense')
  if dense is None:
    raise ValueError(f'{root}: no tied dense point has finished; nothing to compare with.')
  budget = BUDGET * dense['vocab_params']
  std = pooled_std(groups)
  chosen = sweep_table.tuned(table)
  tuned = chosen[chosen['head'] == 'tied'] if not chosen.empty else None
  tuned_dense = None if tuned is None else _pick(tuned, 'dense')
  grid_lr = f' at the grid\'s train.lr={base[sweep_table.TUNED].iloc[0]:g}' if (
      sweep_table.TUNED in base.columns) else ''
  by_steps = _by_steps(table)
  longest = None
  if by_steps is not None:
    steps, at_steps = by_steps
    longest = at_steps[at_steps['num_steps'] == steps[-1]]
    dense_longest = _pick(longest, 'dense')
  header = ['kind', 'rank', 'vocab params', 'of dense', 'seeds', 'test ppl', 'vs dense']
  if tuned is not None:
    header.append('at its tuned lr: lr, test ppl (vs dense at its own)')
  if longest is not None:
    header.append(f'at {steps[-1]} steps: test ppl (vs dense at {steps[-1]})')
  dense_cells = ['dense', '', f'{int(dense["vocab_params"]):,}', '100%', dense['seeds'],
                 _mean_std(dense), '']
  if tuned is not None:
    dense_cells.append(_at_tuned(tuned_dense, None, std))
  if longest is not None:
    dense_cells.append('-' if dense_longest is None else _mean_std(dense_longest))
  lines = [BEGIN, '',
           f'![test perplexity against vocabulary parameters]({root.as_posix()}/'
           f'ppl_vs_vocab_params.png)', '',
           f'Each kind at its point nearest {BUDGET:.0%} of dense\'s vocabulary parameters '
           f'({int(budget):,}), tied head{grid_lr}: test perplexity, mean ± sd over seeds '
           f'("within seed noise" by the test of [the findings]({root.as_posix()}/'
           f'{FINDINGS_FILE})):', '', _cells(header),
           '|---|---:|---:|---:|---:|---:|---|' + '---|' * (len(header) - 7),
           _cells(dense_cells)]
  for kind in _factorized_kinds(groups):
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')]
    if points.empty:
      continue
    row = points.loc[(points['vocab_params'].astype(float) - budget).abs().idxmin()]
    rank = None if pd.isna(row['rank']) else int(row['rank'])
    versus = _versus(row, dense, std)
    cells = [kind, '' if rank is None else rank, f'{int(row["vocab_params"]):,}',
             f'{row["vocab_params"] / dense["vocab_params"]:.0%}', row['seeds'],
             _mean_std(row), versus]
    if tuned is not None:
      cells.append(_at_tuned(_pick(tuned, kind, rank=rank),
                             dense if tuned_dense is None else tuned_dense, std))
    if longest is not None:
      long_row = _pick(longest, kind, rank=rank)
      cells.append('-' if long_row is None else _mean_std(long_row) + (
          '' if dense_longest is None else f' ({_versus(long_row, dense_longest, std)})'))
    lines.append(_cells(cells))
  if tuned is not None:
    lines += ['', 'Tuned: the rate of lowest best-valid perplexity among those tried'
              + (' (edge: the lowest or highest tried, so a wider range may do better).'
                 if tuned['at_edge'].any() else ', each inside the range tried.')]
  if longest is not None:
    lines += ['', f'At {steps[-1]} steps: train.num_steps={steps[-1]}, everything else as in '
              'the grid (the findings say which of those runs were still improving).']
  lines += ['', f'The full findings, every point and the commands: '
            f'[{root.as_posix()}/{FINDINGS_FILE}]({root.as_posix()}/{FINDINGS_FILE}).', '', END]
  return '\n'.join(lines) + '\n'


def _cells(cells: list) -> str:
  """One Markdown table row; an empty cell stays one space wide ('| dense | | ...')."""
  return ('| ' + ' | '.join(map(str, cells)) + ' |').replace('|  |', '| |')


def _at_tuned(row: pd.Series | None, dense: pd.Series | None, std: float) -> str:
  """'0.006 (edge): 188.2 (+9.7%)': a tuned row's rate ('edge': the lowest or highest
  tried) and test perplexity, against `dense` with the noise test ('-' where the point was
  run at one rate only; no comparison for dense)."""
  if row is None:
    return '-'
  edge = ' (edge)' if row['at_edge'] else ''
  text = f'{row[sweep_table.TUNED]:g}{edge}: {_mean_std(row)}'
  if dense is None:
    return text
  versus = _versus(row, dense, std)
  return f'{text} ({versus})'


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
  parser.add_argument('--readme', help='also rewrite the headline between the markers in '
                      'this file')
  args = parser.parse_args()
  findings = pathlib.Path(args.sweep_dir) / FINDINGS_FILE
  findings.write_text(render(args.sweep_dir))
  print(f'{findings}: rewritten')
  if args.readme:
    path = pathlib.Path(args.readme)
    path.write_text(replace_section(path.read_text(), render_headline(args.sweep_dir)))
    print(f'{path}: headline rewritten from {args.sweep_dir}')


if __name__ == '__main__':
  main()
