r"""What a finished sweep shows: a results folder's README, from its data alone.

The folder's data and its findings.json (folders.py) make its README; `--readme` also
rewrites the folder's block of the repository README (headline.py):

  python -m factorized.analysis.findings results/brown --readme=README.md

rewrites `results/brown/README.md` (folders.FINDINGS_FILE) and the README's block between
the folder's markers, and, for a folder that names another `beside` it, redraws the headline
figure of both protocols (write_protocols); tests/test_findings.py fails when either text
differs from the data.

Rules the text follows (comparison.py and stats.py hold the means):
- A difference is called real only when a t-test over seeds says so: the pooled-variance
  test, s pooled over every point with several seeds, since most points have one.
  Otherwise it is "within seed noise" and gets no verdict either way. Welch's test, which
  does not pool, is shown beside it for the points with several seeds.
- The p-values here are per comparison and the page says how many it made; the headline's
  comparisons with the reference are one family, Holm-adjusted.
- Every gap to the reference says where it comes from: each frequency group's part in nats
  per test token, summing to the all-token gap (comparison.decompose).
- A derived row (post-hoc SVD fine-tuned after its parent) meets a row trained from scratch
  only at matched steps; otherwise the text says they are not step-matched. Two runs
  trained from scratch are compared whatever their train.num_steps: a setting, chosen by
  valid perplexity like the others. A post-hoc row is a function of its parent run, so it is
  read against that run without a seed-noise test.
- A published anchor is compared only under its own protocol (vocabulary size and test
  tokens); otherwise the text says the protocol differs.
- A point with at least the reference's vocabulary parameters is never called a
  compression. Tables show the grid's own settings (each swept field at its most common
  value); tuned configurations and longer runs have their own paragraphs.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import pandas as pd

from factorized import files
from factorized.analysis import folders, headline, memory, plots, stats
from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table
from factorized.analysis.comparison import (
  TESTED,
  Points,
  best_step_text,
  by_steps,
  config_text,
  gap_text,
  input_label,
  mean_sd,
  p_text,
  parent_run,
  point_label,
  ppl_text,
  table_row,
  tried_text,
  tuned_rows,
)
from factorized.evaluation.posthoc import POSTHOC_METHOD

MACHINE_FILE = 'machine.json'


def _summary_table(page: Points) -> list[str]:
  reference = page.reference
  lines = [f'| kind | head | rank | seeds | vocab params | vocab bytes | test ppl | vs '
           f'{page.folder.reference} | frequent-type ppl | best valid ppl |',
           '|---|---|---:|---:|---:|---:|---:|---|---:|---:|']
  for _, row in page.every[(page.every['head'] == 'tied')
                           | (page.every['head_kind'] == 'dense')].iterrows():
    if row['method'] == sweep_table.TRAINED:
      versus = '' if page.same(row, reference) else page.versus(row, reference)
    else:  # against the run it was computed from, not the seeds' mean: no seed noise
      parent = parent_run(page, row)
      versus = '-' if parent is None else (
          f'{row[f"{TESTED}_mean"] / parent[f"{TESTED}_mean"] - 1:+.1%} vs its parent '
          f'{parent["run"]}{page.step_mismatch(row, parent)}')
    rank = '' if pd.isna(row['rank']) else str(int(row['rank']))
    stored = sweep_table.precision(row)
    kind = row['kind'] + ('' if stored in ('float32', 'codes') else f' {stored}')
    lines.append(table_row([
        kind, sweep_table.head_label(row), rank, row['seeds'], f'{int(row["vocab_params"]):,}',
        f'{int(row["vocab_bytes"]):,}', mean_sd(row), versus,
        mean_sd(row, page.frequent) if page.frequent else '-', mean_sd(row, 'best_valid_ppl')]))
  return lines


def _anchors(page: Points) -> list[str]:
  """The reference against the published anchors, only where their protocol is ours."""
  if not page.folder.anchors:
    return []
  run = page.runs(page.reference)['run'].iloc[0]
  summary = json.loads((page.folder.root / run / 'summary.json').read_text())
  groups = summary.get('test_bands') or summary.get('test_classes') or {}
  vocab, tokens = summary.get('vocab_size'), sum(g.get('tokens', 0) for g in groups.values())
  reference = f'{page.folder.reference} (tied, {mean_sd(page.reference)})'
  same, other = [], []
  for anchor in page.folder.anchors:
    source = f' ({anchor.source})' if anchor.source else ''
    if anchor.vocab_size == vocab and anchor.test_tokens == tokens:
      test = stats.compare(float(page.reference[f'{TESTED}_mean']), int(page.reference['seeds']),
                           anchor.test_ppl, 1, page.pooled[TESTED])
      page.count('anchor', anchor.name)
      relative = page.reference[f'{TESTED}_mean'] / anchor.test_ppl - 1
      same.append(f'{anchor.name}{source}, {anchor.test_ppl:g}: {reference} '
                  f'{gap_text(relative, test)}')
    else:
      other.append(f'{anchor.name}, {anchor.test_ppl:g}{source}: vocabulary '
                   f'{anchor.vocab_size:,} against {vocab:,} here, {anchor.test_tokens:,} test '
                   f'tokens against {tokens:,}')
  lines = []
  if same:
    lines.append('Published anchors under this protocol (same vocabulary and test tokens): '
                 + '; '.join(same) + '.')
  if other:
    lines.append('Published anchors measured under another protocol, so not compared with '
                 'these numbers: ' + '; '.join(other) + '.')
  return [' '.join(lines), '']


def _thresholds(page: Points) -> list[str]:
  """Per kind, the smallest rank within each threshold of the reference, with its test."""
  reference, lines = page.reference, []
  for kind in page.factorized_kinds(page.groups):
    points = page.trained(page.groups)
    points = points[(points['kind'] == kind) & (points['head'] == 'tied')].dropna(
        subset=['rank']).sort_values('rank')
    full = points[points['vocab_params'] >= reference['vocab_params']]
    points = points[points['vocab_params'] < reference['vocab_params']]  # compressions only
    if points.empty:
      continue
    # Per threshold, the smallest rank at most that far above the reference (below it
    # counts); thresholds that the same rank first meets share one clause.
    reached: dict[int | None, list[float]] = {}
    for threshold in page.folder.thresholds:
      within = points[points[f'{TESTED}_mean']
                      <= (1 + threshold) * reference[f'{TESTED}_mean']]
      reached.setdefault(None if within.empty else within.index[0], []).append(threshold)
    parts = []
    for index, thresholds in reached.items():
      named = ' and '.join(f'{threshold:.0%}' for threshold in thresholds)
      if index is None:
        best = points.loc[points[f'{TESTED}_mean'].astype(float).idxmin()]
        parts.append(f'never within {named} up to rank {int(points["rank"].max())} '
                     f'(best {ppl_text(best[f"{TESTED}_mean"])} at rank {int(best["rank"])}: '
                     f'{page.versus(best, reference)})')
        continue
      first = points.loc[index]
      below = (f'below {page.folder.reference} or '
               if first[f'{TESTED}_mean'] < reference[f'{TESTED}_mean'] else '')
      parts.append(f'{below}within {named} from rank {int(first["rank"])}'
                   f' ({ppl_text(first[f"{TESTED}_mean"])}, '
                   f'{int(first["vocab_params"]):,} vocab parameters: '
                   f'{page.versus(first, reference)})')
    if not full.empty:
      parts.append(f'rank {", ".join(str(int(r)) for r in full["rank"])} has at least '
                   f"{page.folder.reference}'s vocabulary parameters (no compression)")
    lines.append(f'- **{kind}**: ' + '; '.join(parts) + '.')
  return lines


def _noise(page: Points) -> list[str]:
  seeded = page.trained(page.groups)
  seeded = seeded[(seeded['seeds'] > 1) & (seeded['head'] == 'tied')]
  pooled = page.pooled[TESTED]
  if not pooled.df:
    return ['- Seed noise: no point has more than one seed yet, so no difference is tested.']
  reference = page.reference
  stds = ', '.join(f'{point_label(row)} ±{row[f"{TESTED}_std"]:.1f} ({row["seeds"]} seeds)'
                   for _, row in seeded.iterrows())
  others = len(page.seeded) - len(seeded)
  n_ref = int(reference['seeds'])
  lines = [
      f'- Seed noise (sample sd of test perplexity over seeds): {stds}'
      + (f', and {others} other point{"s" if others > 1 else ""} with several seeds' if others
         else '')
      + f'; pooled over them s = {pooled.s:.1f} with {pooled.df} degrees of freedom. A '
      'difference of means over n_a and n_b seeds is real beyond '
      f't_0.975,{pooled.df} s sqrt(1/n_a + 1/n_b) (against the {n_ref}-seed '
      f'{page.folder.reference} mean: {stats.noise_threshold(pooled, 1, n_ref):.1f} for one '
      f'seed, {stats.noise_threshold(pooled, 3, n_ref):.1f} for three). Pooling assumes one '
      'seed-noise level for every point.']
  welch = []
  reference_runs = page.runs(reference)[TESTED].astype(float)
  for _, row in seeded.iterrows():
    if not page.same(row, reference) and n_ref > 1:
      test = stats.welch(page.runs(row)[TESTED].astype(float), reference_runs)
      page.count('welch', point_label(row))
      relative = row[f'{TESTED}_mean'] / reference[f'{TESTED}_mean'] - 1
      welch.append(f'{point_label(row)} {gap_text(relative, test)}')
  if welch:
    lines.append("- Welch's t-test, which does not assume equal spreads, on the points with "
                 f'several seeds against {page.folder.reference}: ' + '; '.join(welch) + '.')
  close = []
  for _, row in page.trained(page.groups[page.groups['head'] == 'tied']).iterrows():
    if (row['kind'] != page.folder.reference and not pd.isna(row['rank'])
        and row['vocab_params'] < reference['vocab_params']):  # compressions only
      test = page.test(row, reference)
      if test.tested and not test.real:
        close.append(f'{point_label(row)} ({row["seeds"]} seed{"s" if row["seeds"] > 1 else ""}, '
                     f'{p_text(test)})')
  lines.append(f'- Compressions within seed noise of {page.folder.reference}'
               + (f': {", ".join(close)}.' if close else ': none.'))
  return lines


def _where(page: Points) -> list[str]:
  """The decomposition of every gap to the reference the findings print: the grid's points,
  the tuned configurations and the longer runs, one table per grouping."""
  reference, rows = page.reference, []
  for _, row in page.trained(page.every).iterrows():
    if not page.same(row, reference):
      rows.append((point_label(row), row, reference))
  chosen = tuned_rows(page, None)
  if chosen is not None:
    tuned, tuned_reference, fields = chosen
    for _, row in tuned.iterrows():
      if not page.same(row, tuned_reference):
        rows.append((f'{point_label(row)} at its tuned {config_text(row, fields)} (vs '
                     f'{page.folder.reference} at its own)', row, tuned_reference))
  longer = by_steps(page)
  if longer is not None:
    steps, at_steps = longer
    for n in steps[1:]:
      at = at_steps[at_steps['num_steps'] == n]
      base = page.pick(at, page.folder.reference)
      for _, row in at.iterrows():
        if base is not None and not page.same(row, base):
          rows.append((f'{point_label(row)} at {n} steps (vs {page.folder.reference} at {n})', row,
                       base))
  tables: dict[str, list] = {}
  listed: list[tuple[pd.Series, pd.Series]] = []
  for label, row, base in rows:
    if any(page.same(row, a) and page.same(base, b) for a, b in listed):
      continue  # a tuned configuration that is also a longer run
    listed.append((row, base))
    found = page.decompose(row, base)
    if found is not None:
      tables.setdefault(found.prefix, []).append((label, row, base, found))
  if not tables:
    return []
  derived = not page.groups[page.groups['method'] != sweep_table.TRAINED].empty
  lines = [f'**Where each gap to {page.folder.reference} comes from**: the all-token gap in '
           'mean test loss (nats per test token, each side\'s mean over its seeds) split into '
           f'each frequency group\'s part, (loss - {page.folder.reference}\'s loss on the '
           "group) × the group's share of test tokens; the parts sum to the gap. Frequent-type "
           f'perplexity: on {page.frequent_text()}.'
           + (' The post-hoc rows are not split: their files hold perplexity alone.' if derived
              else ''), '']
  for prefix, entries in tables.items():
    shares = entries[0][3].shares
    names = list(shares)
    grouping = 'band' if prefix == sweep_table.BAND_PREFIX else 'class (train count)'
    lines += ['| point | all tokens | ' + ' | '.join(f'{grouping} `{n}` ({shares[n]:.1%})'
                                                      for n in names)
              + f' | test ppl vs {page.folder.reference} | frequent-type ppl vs '
              f'{page.folder.reference} |', '|---|---:|' + '---:|' * len(names) + '---|---|']
    for label, row, base, found in entries:
      lines.append(table_row([label, f'{found.gap:+.3f}',
                           *[f'{found.parts[n]:+.3f}' for n in names],
                           page.versus(row, base),
                           page.versus(row, base, page.frequent) if page.frequent else '-']))
    lines.append('')
  return lines


def _posthoc(page: Points) -> list[str]:
  """Post-hoc SVD of the trained reference against svd trained from scratch, at the same
  rank, with the test only where the two were trained for the same steps."""
  derived = page.groups[page.groups['method'] != sweep_table.TRAINED].dropna(subset=['rank'])
  derived = derived[derived['method'].str.startswith(POSTHOC_METHOD)]
  if derived.empty:
    return ['Post-hoc SVD has not been run on the dense point yet.']
  series = list(dict.fromkeys(zip(derived['method'], derived['finetune_steps'], strict=True)))
  names = {s: s[0].replace(POSTHOC_METHOD, 'post-hoc SVD', 1).replace('_', ' ')
           + (f' + ft{s[1]}' if s[1] else '') for s in series}
  lines = ['| rank | vocab params | ' + ' | '.join(names[s] for s in series)
           + ' | svd from scratch |', '|' + '---:|' * (len(series) + 3)]
  ranks = sorted({int(r) for r in derived['rank']})
  for rank in ranks:
    cells, params = [str(rank)], '-'
    for method, steps in series:
      row = page.pick(derived, None, rank=rank, method=method, finetune_steps=steps)
      if row is not None:
        params = f'{int(row["vocab_params"]):,}'
      cells.append(ppl_text(row[f'{TESTED}_mean']) if row is not None else '-')
    scratch = page.pick(page.groups, 'svd', rank=rank)
    lines.append('| ' + ' | '.join([cells[0], params, *cells[1:], mean_sd(scratch)]) + ' |')
  reference = page.reference
  compressed = sorted({int(r) for r in derived.loc[
      derived['vocab_params'] < reference['vocab_params'], 'rank']})
  reading = [_against_scratch(page, derived, s, names[s], compressed) for s in series]
  reading += _control(page, derived, series)
  full = [r for r in ranks if r not in compressed]
  if full:
    reading.append('Rank ' + ', '.join(map(str, full)) + f" keeps at least "
                   f"{page.folder.reference}'s vocabulary parameters: no compression, left out "
                   'of the comparisons with svd from scratch.')
  return lines + [''] + [f'- {line}' for line in reading if line]


def _against_scratch(page: Points, derived: pd.DataFrame, series: tuple[str, int], name: str,
                     ranks: list[int]) -> str:
  """One post-hoc series against svd trained from scratch at each compressing rank: lower,
  higher or within seed noise where step-matched; the gaps without a verdict where not."""
  method, steps = series
  lower, higher, within, unmatched, mismatch = [], [], [], [], ''
  for rank in ranks:
    row = page.pick(derived, None, rank=rank, method=method, finetune_steps=steps)
    scratch = page.pick(page.groups, 'svd', rank=rank)
    if row is None or scratch is None:
      continue
    relative = row[f'{TESTED}_mean'] / scratch[f'{TESTED}_mean'] - 1
    mismatch = page.step_mismatch(row, scratch)
    if mismatch:
      unmatched.append(f'{rank} ({relative:+.1%})')
      continue
    test = page.test(row, scratch)
    entry = f'{rank} ({relative:+.1%}, {p_text(test)})'
    (within if not test.real else lower if relative < 0 else higher).append(entry)
  subject = f'{name[0].upper()}{name[1:]} against svd trained from scratch'
  if unmatched:
    return (f'{subject}{mismatch.replace(", not", ": not")}, so no verdict: rank '
            + ', '.join(unmatched) + '.')
  parts = []
  if lower:
    parts.append(f'lower test perplexity at rank {", ".join(lower)}')
  if higher:
    parts.append(f'higher at rank {", ".join(higher)}')
  if within:
    parts.append(f'within seed noise at rank {", ".join(within)}')
  return f'{subject}, at the same training steps: ' + '; '.join(parts) + '.' if parts else ''


def _control(page: Points, derived: pd.DataFrame, series: list[tuple[str, int]]) -> list[str]:
  """The compute-matched control (the parent trained the same extra steps), and what the
  fine-tuned rows that truncate nothing show against it."""
  lines = []
  for _, row in page.groups[page.groups['method'] == sweep_table.FINETUNED].iterrows():
    parent, steps = parent_run(page, row), int(row['finetune_steps'])
    if parent is None:
      continue
    change = row[f'{TESTED}_mean'] / parent[f'{TESTED}_mean'] - 1
    lines.append(f'Compute-matched control: the parent {parent["run"]} trained the same {steps} '
                 f'steps further ({row["kind"]}) reaches {ppl_text(row[f"{TESTED}_mean"])} against '
                 f'its own {ppl_text(parent[f"{TESTED}_mean"])} ({change:+.1%}: the same run '
                 'continued, no seed noise between them).')
    for method, ft in series:
      if ft != steps:
        continue
      for _, full in derived[(derived['method'] == method) & (derived['finetune_steps'] == ft)
                             & (derived['vocab_params'] >= page.reference['vocab_params'])
                             ].iterrows():
        lines.append(f'At rank {int(full["rank"])} nothing is truncated (post-hoc SVD is the '
                     f'same function as {parent["run"]}); {steps} fine-tuning steps in svd form '
                     f'end at {ppl_text(full[f"{TESTED}_mean"])} against the control\'s '
                     f'{ppl_text(row[f"{TESTED}_mean"])} at the same steps: '
                     f'{page.versus(full, row)}.')
  return lines


def _heads(page: Points) -> list[str]:
  untied = page.trained(page.groups[page.groups['head'] == 'untied'])
  if untied.empty:
    return ['No untied point has finished yet.']
  lines = ['| kind | rank | tied: vocab params | tied: test ppl | untied: vocab params | '
           'untied: test ppl |', '|---|---:|---:|---:|---:|---:|']
  gaps = []
  for _, row in untied.iterrows():
    rank = None if pd.isna(row['rank']) else int(row['rank'])
    tied = page.pick(page.groups, row['kind'], rank=rank)
    lines.append(f'| {row["kind"]} | {"" if rank is None else rank} | '
                 + (f'{int(tied["vocab_params"]):,} | {mean_sd(tied)}' if tied is not None
                    else '- | -')
                 + f' | {int(row["vocab_params"]):,} | {mean_sd(row)} |')
    if tied is not None:
      name = row['kind'] + ('' if rank is None else f' {rank}')
      gaps.append(f'{name} {page.versus(row, tied)}, for '
                  f'{int(row["vocab_params"] - tied["vocab_params"]):,} more parameters')
  if gaps:
    lines += ['', '- Untying the head changes test perplexity by: ' + '; '.join(gaps) + '.']
  return lines


def _split(page: Points) -> list[str]:
  """How a vocabulary budget near the folder's of the reference's is best split between the
  input and an untied head of its own kind: every point there, best valid first, and the
  best split against the best tied point, against the same budget in one tied table of its
  input's kind and against the other splits, each with the test (chosen by valid
  perplexity; the test split chooses nothing)."""
  every, reference, folder = page.trained(page.every), page.reference, page.folder
  own = every[(every['head'] == 'untied') & (every['head_kind'] != 'dense')]
  if own.empty:
    return []
  limit = folder.budget * (1 + folder.budget_slack) * reference['vocab_params']
  near = every[(every['vocab_params'] <= limit)
               & ((every['head'] == 'tied') | (every['head_kind'] != 'dense'))]
  # By valid perplexity; on a tie the smaller point first (the test split chooses nothing).
  near = near.assign(_valid=near['best_valid_ppl_mean'].astype(float)).sort_values(
      ['_valid', 'vocab_params'], kind='stable')
  lines = ['**The output head as its own factorization**: every point within '
           f'{folder.budget * (1 + folder.budget_slack):.0%} of {folder.reference}\'s vocabulary '
           f'parameters ({int(limit):,}), tied or with an untied head of its own kind, by valid '
           'perplexity (the vocabulary parameters are the input\'s plus the head\'s):', '',
           f'| input | head | vocab params | of {folder.reference} | seeds | best valid ppl '
           f'| test ppl | vs {folder.reference} |', '|---|---|---:|---:|---:|---:|---:|---|']
  for _, row in near.iterrows():
    lines.append(f'| {point_label(row) if row["head"] == "tied" else input_label(row)} | '
                 f'{sweep_table.head_label(row)} | {int(row["vocab_params"]):,} | '
                 f'{row["vocab_params"] / reference["vocab_params"]:.1%} | {row["seeds"]} | '
                 f'{mean_sd(row, "best_valid_ppl")} | {mean_sd(row)} | '
                 f'{page.versus(row, reference)} |')
  tied, split = near[near['head'] == 'tied'], near[near['head'] == 'untied']
  if not tied.empty and not split.empty:
    best_tied, best_split = tied.iloc[0], split.iloc[0]
    lines += ['', f'- Best split by valid perplexity: input {input_label(best_split)}, head '
              f'{sweep_table.head_label(best_split)}: test {mean_sd(best_split)}, '
              f'{page.versus(best_split, best_tied)} against the best tied point there '
              f'({point_label(best_tied)}, {mean_sd(best_tied)}).']
    same = tied[(tied['kind'] == best_split['kind']) & (
        (tied['vocab_params'] - best_split['vocab_params']).abs()
        <= folder.budget_slack * best_split['vocab_params'])]
    if not same.empty:
      whole = same.iloc[0]
      lines.append(f'- Against the same budget in one tied {whole["kind"]} table '
                   f'({point_label(whole)}, {int(whole["vocab_params"]):,} vocab params, '
                   f'{mean_sd(whole)}): {page.versus(best_split, whole)}.')
    others = [f'{input_label(row)} + {sweep_table.head_label(row).removeprefix("untied ")} '
              f'({mean_sd(row)}): {page.versus(best_split, row)}'
              for _, row in split.iloc[1:].iterrows()]
    if others:
      lines.append('- The best split against the other splits there: ' + '; '.join(others)
                   + '.')
  return [*lines, '']


def _head_map(page: Points) -> list[str]:
  """What the input rank x head rank map shows, per pair of input kind and head kind: the
  change from the lowest to the highest head rank at each input rank, from the lowest to
  the highest input rank at each head rank, and (input and head of one kind) the same
  vocabulary parameters spent on the head rather than the input, each with the test."""
  every = page.trained(page.every)
  own = every[(every['head'] == 'untied') & (every['head_kind'] != 'dense')
              & every['rank'].notna() & every['head_rank'].notna()]
  if own.empty:
    return []

  def change(low: pd.Series, high: pd.Series) -> str:
    return f'{mean_sd(low)} → {mean_sd(high)} ({page.versus(high, low)})'

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
          mirrors.append(f'{kind} {rank} + {head_kind} {head_rank} ({mean_sd(row)}) against '
                         f'{kind} {head_rank} + {head_kind} {rank} ({mean_sd(mirror)}): '
                         f'{page.versus(row, mirror)}')
      if mirrors:
        reading.append('The same vocabulary parameters on the head rather than the input '
                       '(input + head): ' + '; '.join(mirrors) + '.')
    if reading:
      lines += [f'**The input rank × head rank map**, {kind} input and {head_kind} head:', '',
                *[f'- {line}' for line in reading], '']
  if (page.folder.root / sweep_report.HEAD_MAP_FILE).exists():
    lines += ['![test perplexity over input rank and head rank]'
              f'({sweep_report.HEAD_MAP_FILE})', '']
  return lines


def _tuned(page: Points) -> list[str]:
  """The tuned configurations: over the learning rate alone (the tuning plot's) and over
  every swept field, each against the reference at its own, with the test; which chosen
  values sit at the edge of those tried, and whether the chosen runs still improved."""
  lines = []
  for over, title in (((sweep_table.TUNED,), f'**Tuned {sweep_table.TUNED} per kind** ('
                       f"{sweep_table.TUNED} alone, at the grid's other settings"),
                      (None, '**Tuned configurations per kind** (over every swept field')):
    found = tuned_rows(page, over)
    if found is None:
      continue
    chosen, reference, fields = found
    if over is None and fields == [sweep_table.TUNED]:
      continue  # the same choice as the table above
    lines += [f'{title}: the configuration of lowest best-valid perplexity, compared on the '
              'seeds every configuration has; the test split chooses nothing):', '',
              '| kind | rank | configuration | configurations tried | best valid ppl | best '
              f'valid at step | test ppl | vs {page.folder.reference} at its own | '
              f'frequent-type ppl vs {page.folder.reference} at its own |',
              '|---|---:|---|---|---:|---|---:|---|---|']
    edges = []
    for _, row in chosen.iterrows():
      rank = '' if pd.isna(row['rank']) else int(row['rank'])
      is_reference = page.same(row, reference)
      lines.append(table_row([
          row['kind'], rank, config_text(row, fields), f'{tried_text(row)}: {row["tried"]}',
          ppl_text(row['best_valid_ppl_mean']), best_step_text(row), mean_sd(row),
          '' if is_reference else page.versus(row, reference),
          '' if is_reference or not page.frequent else page.versus(row, reference,
                                                                    page.frequent)]))
      if row['at_edge']:
        edges.append(f'{input_label(row)} ({row["edges"].replace(",", ", ")})')
    if edges:
      lines += ['', '- The chosen value is the lowest or highest tried for: '
                + '; '.join(edges) + '. A wider range may do better there.']
    lines.append('')
    if over is not None and (page.folder.root / sweep_report.TUNING_PNG_FILE).exists():
      lines += [f'![best valid perplexity against the learning rate]'
                f'({sweep_report.TUNING_PNG_FILE})', '']
  return lines


def _longer(page: Points) -> list[str]:
  """The gap to the reference after more steps (a swept train.num_steps), per kind and rank:
  the table, whether the gap moved (the pooled test of the difference of differences over
  the four means) and which of the longest runs were still improving."""
  longer = by_steps(page)
  if longer is None:
    return []
  steps, groups = longer
  name = page.folder.reference
  lines = [f'**Longer training** (train.num_steps {" against ".join(map(str, steps))}, '
           f'everything else equal; test perplexity and the gap to {name} at the same steps):',
           '', '| kind | rank | ' + ' | '.join(f'{n} steps' for n in steps) + ' |',
           '|---|---:|' + '---:|' * len(steps)]
  reference_at = {n: page.pick(groups[groups['num_steps'] == n], name) for n in steps}
  lines.append(f'| {name} | | ' + ' | '.join(mean_sd(reference_at[n]) for n in steps) + ' |')
  moves = []
  for (kind, rank), points in groups.groupby(['kind', 'rank'], dropna=False, sort=False):
    if kind == name or len(points) < 2:
      continue
    cells, at = [], {}
    for n in steps:
      point, base = points[points['num_steps'] == n], reference_at[n]
      if point.empty or base is None:
        cells.append('-')
        continue
      at[n] = (point.iloc[0], base)
      cells.append(f'{mean_sd(point.iloc[0])} ({page.versus(point.iloc[0], base)})')
    lines.append(f'| {kind} | {"" if pd.isna(rank) else int(rank)} | ' + ' | '.join(cells)
                 + ' |')
    if steps[0] in at and steps[-1] in at:
      (first, first_base), (last, last_base) = at[steps[0]], at[steps[-1]]
      rows = (first, first_base, last, last_base)
      test = stats.difference_of_differences(
          tuple(float(r[f'{TESTED}_mean']) for r in rows),
          tuple(int(r['seeds']) for r in rows), page.pooled[TESTED])
      page.count('moved', kind, rank)
      before = first[f'{TESTED}_mean'] - first_base[f'{TESTED}_mean']
      after = last[f'{TESTED}_mean'] - last_base[f'{TESTED}_mean']
      verdict = (f'{p_text(test)}' if test.real else f'within seed noise, {p_text(test)}'
                 ) if test.tested else 'untested for seed noise'
      moves.append(f'{input_label(first)} {before:+.1f} → {after:+.1f} ({after - before:+.1f}, '
                   f'{verdict})')
  lines.append('')
  if moves:
    lines.append(f'- The gap to {name} in test perplexity from {steps[0]} to {steps[-1]} steps '
                 '(whether it moved: the pooled test of the change over its four means): '
                 + '; '.join(moves) + '.')
  longest = page.trained(page.table)
  longest = longest[longest['num_steps'] == steps[-1]].dropna(subset=['best_step'])
  if not longest.empty:
    lines.append(f'- Step of best valid perplexity in the {steps[-1]}-step runs (the last one: '
                 'still improving): ' + ', '.join(
                     f'{row.run} {int(row.best_step)}'
                     + (' (the last)' if row.best_step == row.steps else '')
                     for row in _reference_first(longest, name).itertuples()) + '.')
  return lines + ['']


def _reference_first(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
  return pd.concat([frame[frame['kind'] == reference], frame[frame['kind'] != reference]])


def _bands(page: Points) -> list[str]:
  """Test perplexity per frequency band as a ratio to the reference's, per tied point."""
  bands = [c[:-5] for c in page.groups.columns
           if c.startswith(sweep_table.BAND_PREFIX) and c.endswith('_mean')]
  kinds = [k for k in page.factorized_kinds(page.groups)
           if not page.groups[(page.groups['kind'] == k) & (page.groups['head'] == 'tied')].empty]
  if not bands or not kinds:
    return []
  reference = page.reference
  names = [f'`{b.removeprefix(sweep_table.BAND_PREFIX)}`' for b in bands]
  lines = ['Test perplexity by frequency band of the target (rank in train-split '
           f'frequency), as a ratio to {page.folder.reference}\'s:', '',
           '| kind | rank | ' + ' | '.join(names) + ' |', '|---|---:|' + '---:|' * len(names)]
  findings = []
  for kind in kinds:
    points = page.trained(page.groups)
    points = points[(points['kind'] == kind) & (points['head'] == 'tied')].dropna(
        subset=['rank']).sort_values('rank')
    for _, row in points.iterrows():
      ratios = [row[f'{b}_mean'] / reference[f'{b}_mean'] for b in bands]
      lines.append(f'| {kind} | {int(row["rank"])} | '
                   + ' | '.join(f'{r:.2f}' for r in ratios) + ' |')
    if not points.empty:
      low = points.iloc[0]
      ratios = {n: low[f'{b}_mean'] / reference[f'{b}_mean']
                for n, b in zip(names, bands, strict=True)}
      worst = max(ratios, key=ratios.get)
      findings.append(f'{kind} at rank {int(low["rank"])} pays most in band {worst} '
                      f'(×{ratios[worst]:.2f}); the most frequent band, {names[0]}, changes by '
                      f'×{ratios[names[0]]:.2f}')
  return lines + ([''] + [f'- {f} (one seed at most points: a ratio, untested).'
                          for f in findings] if findings else [])


def _improving(page: Points) -> list[str]:
  """Which trained points of the grid had their best valid perplexity at their last step."""
  runs = page.trained(page.base).dropna(subset=['best_step'])
  if runs.empty:
    return []
  still = runs[runs['best_step'] == runs['steps']]['run'].tolist()
  if not still:
    return [f'- No point was still improving: each of the {len(runs)} has its best valid '
            'perplexity before its last step.']
  return [f'- Still improving at their last step (best valid perplexity at the final '
          f'evaluation): {len(still)} of {len(runs)} points'
          + (': all of them.' if len(still) == len(runs) else f': {", ".join(still)}.')
          + ' Their ranking after longer training is not known from these runs alone.']


def _memory(page: Points) -> list[str]:
  """The memory-perplexity front (memory.py): the best point within each share of the
  reference's float32 bytes, and whether factorization and quantization compose."""
  found = memory.front(page)
  if found is None:
    return []
  name = page.folder.reference
  lines = ['**The memory-perplexity front**. ' + memory.intro(found, name), '',
           *[f'- {line}' for line in memory.budget_lines(found, name)], '']
  composed = memory.compose_lines(found, name)
  if composed:
    lines += [f'Whether factorization and quantization compose: each factorized kind stored '
              f'quantized against {name} quantized to the nearest bytes:', '',
              *[f'- {line}' for line in composed], '']
  if (page.folder.root / sweep_report.BYTES_PNG_FILE).exists():
    lines += [f'![test perplexity against vocabulary bytes]({sweep_report.BYTES_PNG_FILE})', '']
  return lines


def _machine(page: Points) -> list[str]:
  root = page.folder.root
  path = root / MACHINE_FILE
  machine = json.loads(path.read_text()) if path.exists() else {}
  walls = []
  for run in page.trained(page.table)['run'].unique():
    summary = root / run / 'summary.json'
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


def render(sweep_dir: str | pathlib.Path) -> str:
  """The full findings of the results folder `sweep_dir`: its folders.FINDINGS_FILE."""
  folder = folders.Folder.load(sweep_dir)
  page = Points(folder)
  root, name = folder.root.as_posix(), folder.reference
  body = [
      *_summary_table(page), '', *_anchors(page),
      '![perplexity against rank](ppl_vs_rank.png)',
      '![perplexity against vocabulary parameters](ppl_vs_vocab_params.png)',
      '![perplexity per frequency band](band_ppl_vs_vocab_params.png)',
      '', f'**How close each factorization comes to {name}** (tied head, test perplexity '
      f'{mean_sd(page.reference)} for {name}):', '', *_thresholds(page), *_noise(page), '',
      *_where(page),
      f'**Post-hoc SVD of the trained {name} table against training factorized from '
      'scratch**, at equal parameters (same rank):', '', *_posthoc(page), '',
      '**Tied against untied output heads** (the softmax bottleneck: an untied head keeps a '
      'full-rank D×V output layer whatever the input rank):', '', *_heads(page), '',
      *_split(page), *_head_map(page), *_tuned(page), *_longer(page), *_memory(page),
      *_bands(page), '',
      *_improving(page), '', *_machine(page)]
  protocol = f' Protocol: {folder.protocol}.' if folder.protocol else ''
  intro = [
      folder.header,
      f'Every number below is read from `{root}/` (one directory per point with its '
      '`summary.json` and `config.json`; the dense point also holds the post-hoc JSONs), '
      'where `summary.md`, `summary.csv`, `aggregate.csv` and the plots are regenerated by '
      f'`python -m factorized.analysis.report {root}`.{protocol} Perplexity is the mean ± '
      'sample standard deviation over seeds where a point has several; "frequent-type ppl" '
      f'is the perplexity on {page.frequent_text() or "no group (the summaries have none)"}.',
      '', f'How differences are read: a difference is called real only when a t-test over '
      'seeds gives p < 0.05 (two-sided); otherwise it is "within seed noise", with no verdict '
      'either way. Most points have one seed, so the test pools the seed noise of the points '
      'that have several (see Seed noise below). A post-hoc row meets another row only at '
      'the same training steps (otherwise the text says "not step-matched"); two runs '
      'trained from scratch are compared whatever their train.num_steps, a setting like any '
      'other. The p-values here are per comparison, unadjusted: this page makes '
      f'{len(page.compared)} tests, so about '
      f'{len(page.compared) / 20:.0f} could pass at 5% by chance alone where nothing differs; '
      "the README headline's comparisons are one family, Holm-adjusted.", '']
  return '\n'.join([*intro, *body]) + '\n'


def write_protocols(sweep_dir: str | pathlib.Path) -> pathlib.Path | None:
  """Draws the folder's protocol beside its sibling's (Folder.beside; plots.plot_protocols)
  into sweep_report.PROTOCOLS_PNG_FILE; None where the folder names none."""
  folder = folders.Folder.load(sweep_dir)
  sibling = folder.sibling
  if sibling is None:
    return None
  tables = {f.panel or f.title: sweep_table.rows_table(sweep_table.collect_rows(f.root)[0])
            for f in (folder, sibling)}
  path = folder.root / sweep_report.PROTOCOLS_PNG_FILE
  files.write_atomic(path, plots.png_bytes(plots.plot_protocols(tables)))
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('sweep_dir', help='a results folder, e.g. results/brown')
  parser.add_argument('--readme', help='also rewrite the folder\'s headline block between its '
                      'markers in this file')
  args = parser.parse_args()
  drawn = write_protocols(args.sweep_dir)
  if drawn:
    print(f'{drawn}: redrawn')
  findings = pathlib.Path(args.sweep_dir) / folders.FINDINGS_FILE
  findings.write_text(render(args.sweep_dir))
  print(f'{findings}: rewritten')
  if args.readme:
    path = pathlib.Path(args.readme)
    section = headline.render_headline(args.sweep_dir)
    folder = folders.Folder.load(args.sweep_dir)
    path.write_text(headline.replace_section(path.read_text(), section, folder))
    print(f'{path}: headline rewritten from {args.sweep_dir}')


if __name__ == '__main__':
  main()
