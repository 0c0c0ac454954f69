"""The README's headline block of a results folder, between its markers (folders.Folder):
each kind at its point nearest the folder's vocabulary budget (tied head, the grid's
settings) against the reference on all tokens and on the frequent types, where each gap
comes from, and the same at each kind's tuned configuration. Its comparisons with the
reference are one family: the verdicts printed are Holm-adjusted (stats.holm). Once a point
stores its tables other than in float32, a paragraph on the memory front follows
(memory.py), its comparisons a Holm family of their own.
"""

from __future__ import annotations

import pathlib

import pandas as pd

from factorized import embeddings
from factorized.analysis import folders, memory, stats
from factorized.analysis import table as sweep_table
from factorized.analysis.comparison import (
  TESTED,
  Points,
  best_step_text,
  config_text,
  gap_text,
  input_label,
  mean_sd,
  p_text,
  point_label,
  table_row,
  tried_text,
  tuned_rows,
)
from factorized.analysis.report import PROTOCOLS_PNG_FILE


def _figure(folder: folders.Folder) -> str:
  """The headline figure: both protocols side by side where the folder draws its sibling
  beside it (findings.write_protocols), else the folder's own."""
  root = folder.root.as_posix()
  sibling = folder.sibling
  if sibling is not None and (folder.root / PROTOCOLS_PNG_FILE).exists():
    return (f'![test perplexity against vocabulary parameters, each point at its tuned '
            f'configuration: {folder.panel or folder.title} beside '
            f'{sibling.panel or sibling.title}]({root}/{PROTOCOLS_PNG_FILE})')
  return f'![test perplexity against vocabulary parameters]({root}/ppl_vs_vocab_params.png)'


def _budget_points(page: Points, groups: pd.DataFrame) -> list[pd.Series]:
  """Per factorized kind whose tables are parameters, its tied point nearest the budget (a
  fraction of the reference's vocabulary parameters). A kind that stores codes (dpq: its
  parameters are the codebooks alone) is sized in bytes, on the memory front."""
  budget = page.folder.budget * page.reference['vocab_params']
  rows = []
  for kind in page.factorized_kinds(groups):
    if embeddings.kind(kind).storage != 'float32':
      continue
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')
                    & (groups['method'] == sweep_table.TRAINED)]
    if not points.empty:
      rows.append(points.loc[(points['vocab_params'].astype(float) - budget).abs().idxmin()])
  return rows


def _headline_tests(page: Points, pairs: list[tuple[pd.Series, pd.Series]]
                    ) -> dict[tuple[int, str], stats.TTest]:
  """The headline's family: each (point, reference) pair on all tokens and on the frequent
  types, step-matched pairs only; Holm-adjusted together."""
  keys, tests = [], []
  for index, (row, base) in enumerate(pairs):
    if page.step_mismatch(row, base):
      continue
    for metric in (TESTED, page.frequent):
      if metric and sweep_table.is_number(row.get(f'{metric}_mean')):
        keys.append((index, metric))
        tests.append(page.test(row, base, metric))
  return dict(zip(keys, stats.adjust(tests), strict=True))


def _versus_adjusted(page: Points, row: pd.Series, base: pd.Series, metric: str,
                     tests: dict, index: int) -> str:
  if (index, metric) not in tests:
    return page.versus(row, base, metric) if metric else '-'
  return gap_text(row[f'{metric}_mean'] / base[f'{metric}_mean'] - 1, tests[(index, metric)])


def first_sentence(page: Points, pairs: list[tuple[pd.Series, pd.Series]], tests: dict,
                   offset: int, where: str) -> str:
  """The headline's first sentence: which kinds, if any, have a lower perplexity than the
  reference beyond seed noise (Holm-adjusted), on all tokens and on the frequent types; "no
  factorization beats" it when none does on all tokens."""
  name = page.folder.reference
  if not pairs:
    return (f'No factorized point has finished under this protocol yet; the table holds '
            f'{name} alone.')

  def lower(metric: str) -> list[str]:
    found = []
    for index, (row, base) in enumerate(pairs, offset):
      test = tests.get((index, metric))
      if test is not None and test.real and row[f'{metric}_mean'] < base[f'{metric}_mean']:
        found.append(point_label(row))
    return found

  if not any(test.tested for test in tests.values()):
    return ('**No difference can be tested yet** under this protocol: no point has several '
            'seeds, so seed noise is unmeasured and no gap below is called real.')
  overall = lower(TESTED)
  frequent = lower(page.frequent) if page.frequent else []
  there = ('on the frequent types, ' + (', '.join(frequent) if frequent else 'none does')
           if page.frequent else '')
  if not overall:
    return (f'**No factorization beats {name}** {where} (Holm-adjusted t-tests on test '
            'perplexity)' + (f'; {there}' if there else '') + '.')
  carried = (', so what they gain sits in the rarer tokens' if page.frequent
             and not set(overall) & set(frequent) else '')
  return (f'**Lower test perplexity than {name} beyond seed noise {where}: '
          f'{", ".join(overall)}** (Holm-adjusted t-tests)' + (f'; {there}' if there else '')
          + f'{carried}. Where each gap comes from is below.')


def _headline_reading(page: Points, pairs: list[tuple[pd.Series, pd.Series]], tests: dict,
                      offset: int, where: str) -> list[str]:
  """The bullets for a set of (point, reference) pairs: the frequent-type verdicts first,
  then each all-token gap, its test and where it comes from."""
  name, bullets = page.folder.reference, []
  if page.frequent:
    verdicts: dict[str, list[str]] = {'higher': [], 'lower': [], 'within': [], 'untested': []}
    for index, (row, base) in enumerate(pairs, offset):
      test = tests.get((index, page.frequent))
      if test is not None:
        relative = row[f'{page.frequent}_mean'] / base[f'{page.frequent}_mean'] - 1
        verdict = ('untested' if not test.tested else 'within' if not test.real
                   else 'higher' if relative > 0 else 'lower')
        # the verdict heads its group: each entry gives the gap and, where tested, p
        verdicts[verdict].append(f'{point_label(row)} {relative:+.1%}'
                                 + (f', {p_text(test)}' if test.tested else ''))
    if len(verdicts['higher']) == len(pairs) > 1:
      bullets.append(f'**{where}, every kind has a higher perplexity than {name} on the '
                     'frequent types**, beyond seed noise: ' + '; '.join(verdicts['higher'])
                     + '.')
    else:
      parts = [f'{label} for {"; ".join(entries)}' for label, entries in (
          (f'higher perplexity than {name} beyond seed noise', verdicts['higher']),
          (f'lower perplexity than {name} beyond seed noise', verdicts['lower']),
          (f'within seed noise of {name}', verdicts['within']),
          ('not yet tested (one seed a side)', verdicts['untested'])) if entries]
      if parts:
        bullets.append(f'**{where}, on the frequent types**: ' + '; '.join(parts) + '.')
  for index, (row, base) in enumerate(pairs, offset):
    test = tests.get((index, TESTED))
    if test is None:
      continue
    relative = row[f'{TESTED}_mean'] / base[f'{TESTED}_mean'] - 1
    found = page.decompose(row, base)
    nats = '' if found is None else f' ({found.gap:+.3f} nats per test token)'
    origin = '' if found is None else f' {found.reading(test.real)}'
    if test.real:
      verdict = 'lower' if relative < 0 else 'higher'
      bullets.append(f'{point_label(row)}: {verdict} all-token perplexity than {name}, '
                     f'{gap_text(relative, test)}{nats}.{origin}')
    else:
      bullets.append(f'{point_label(row)}: all-token perplexity {gap_text(relative, test)} against '
                     f'{name}{nats}.{origin}')
  return bullets


def render_headline(sweep_dir: str | pathlib.Path) -> str:
  """The README's headline block for `sweep_dir` (between its folder's markers): each kind's
  point nearest the budget (tied head, the grid's settings) against the reference on all
  tokens and on the frequent types, where each gap comes from, and the same at each kind's
  tuned configuration; one Holm-adjusted family of tests."""
  folder = folders.Folder.load(sweep_dir)
  page = Points(folder)
  root, name, reference = folder.root.as_posix(), folder.reference, page.reference
  grid = [(row, reference) for row in _budget_points(page, page.groups)]
  found = tuned_rows(page, None)
  tuned_pairs: list[tuple[pd.Series, pd.Series]] = []
  if found is not None:  # every point tuned, the budget's and the others searched alike
    chosen, tuned_reference, fields = found
    tuned_pairs = [(row, tuned_reference) for _, row in chosen.iterrows()
                   if not page.same(row, tuned_reference)]
  pairs = grid + tuned_pairs
  tests = _headline_tests(page, pairs)
  settings = sweep_table.grid_settings(page.table)
  budget = folder.budget * reference['vocab_params']
  first = (first_sentence(page, tuned_pairs, tests, len(grid), 'at its tuned configuration')
           if tuned_pairs else first_sentence(page, grid, tests, 0, 'at this budget'))
  lines = [folder.begin, '', first, '',
           _figure(folder),
           '', f'{"On " + folder.corpus + ", each" if folder.corpus else "Each"} kind at its '
           f'point nearest {folder.budget:.0%} of {name}\'s vocabulary '
           f'parameters ({int(budget):,}), tied head, the grid\'s settings'
           + (f' ({settings})' if settings else '') + f', against {name}. "Frequent types": '
           f'{page.frequent_text() or "none"}.', '',
           *[f'- {b}' for b in _headline_reading(page, grid, tests, 0, 'At this budget')], '',
           'A difference is called real when the pooled t-test over seeds gives p < 0.05 after '
           f'Holm\'s adjustment over the {len(tests)} comparisons with {name} in this block; '
           'otherwise it is "within seed noise". Perplexity: mean ± sd over seeds.', '']
  header = ['kind', 'rank', 'vocab params', f'of {name}', 'seeds', 'test ppl', f'vs {name}',
            'frequent-type ppl', f'vs {name}']
  lines += [table_row(header), '|---|---:|---:|---:|---:|---:|---|---:|---|',
            table_row([name, '', f'{int(reference["vocab_params"]):,}', '100%',
                    reference['seeds'], mean_sd(reference), '', mean_sd(reference,
                                                                         page.frequent), ''])]
  for index, (row, base) in enumerate(grid):
    lines.append(table_row([
        row['kind'], '' if pd.isna(row['rank']) else int(row['rank']),
        f'{int(row["vocab_params"]):,}', f'{row["vocab_params"] / reference["vocab_params"]:.0%}',
        row['seeds'], mean_sd(row), _versus_adjusted(page, row, base, TESTED, tests, index),
        mean_sd(row, page.frequent),
        _versus_adjusted(page, row, base, page.frequent, tests, index)]))
  lines += ['', *_headline_parts(page, pairs)]
  if tuned_pairs:
    lines += [f'At each kind\'s tuned configuration (the combination of swept fields of '
              'lowest best-valid perplexity among those tried; the test split chooses '
              f'nothing), against {name} at its own:', '',
              *[f'- {b}' for b in _headline_reading(page, tuned_pairs, tests, len(grid),
                                                    'At the tuned configurations')], '',
              table_row(['kind', 'rank', 'configuration', 'configurations tried',
                         'best valid at step', 'test ppl', f'vs {name}', 'frequent-type ppl',
                         f'vs {name}']), '|---|---:|---|---|---|---:|---|---:|---|',
              table_row([name, '', config_text(tuned_reference, fields),
                         tried_text(tuned_reference), best_step_text(tuned_reference),
                         mean_sd(tuned_reference), '', mean_sd(tuned_reference, page.frequent),
                         ''])]
    for index, (row, base) in enumerate(tuned_pairs, len(grid)):
      lines.append(table_row([
          row['kind'], '' if pd.isna(row['rank']) else int(row['rank']), config_text(row, fields),
          tried_text(row), best_step_text(row), mean_sd(row),
          _versus_adjusted(page, row, base, TESTED, tests, index), mean_sd(row, page.frequent),
          _versus_adjusted(page, row, base, page.frequent, tests, index)]))
    edges = [f'{input_label(row)} ({row["edges"].replace(",", ", ")})' for row, _ in tuned_pairs
             if row['at_edge']]
    if tuned_reference['at_edge']:
      edges.insert(0, f'{name} ({tuned_reference["edges"].replace(",", ", ")})')
    if edges:
      lines += ['', 'At the edge of the values tried (a wider range may do better): '
                + '; '.join(edges) + '.']
    lines.append('')
  lines += _memory_paragraph(page)
  lines += [f'The full findings, every point and the commands: '
            f'[{root}/{folders.FINDINGS_FILE}]({root}/{folders.FINDINGS_FILE}).', '', folder.end]
  return '\n'.join(lines) + '\n'


def _memory_paragraph(page: Points) -> list[str]:
  """The memory front (memory.py) once a point stores its tables other than in float32:
  the best point within each share of the reference's float32 bytes and whether
  factorization and quantization compose, its tests Holm-adjusted as one family."""
  found = memory.front(page)
  if found is None or found.precisions == {'float32'}:
    return []
  found, name = found.adjusted(), page.folder.reference
  lines = ['**Memory**: ' + memory.intro(found, name), '',
           *[f'- {line}' for line in memory.budget_lines(found, name)]]
  if found.pairs:
    lines.append(f'- {memory.compose_summary(found, name)}')
  return lines + ['', f'These {len(found.tests())} comparisons are one family, Holm-adjusted.',
                  '']


def _headline_parts(page: Points, pairs: list[tuple[pd.Series, pd.Series]]) -> list[str]:
  """The headline's table of where each gap comes from (nats per test token by group)."""
  rows = []
  for row, base in pairs:
    found = page.decompose(row, base)
    if found is not None and not page.step_mismatch(row, base):
      label = point_label(row) + ('' if base is page.reference else ', tuned')
      rows.append((label, found))
  if not rows:
    return []
  prefix, shares = rows[0][1].prefix, rows[0][1].shares
  rows = [(label, found) for label, found in rows if found.prefix == prefix]
  grouping = 'band' if prefix == sweep_table.BAND_PREFIX else 'class'
  return [f'Where each gap to {page.folder.reference} comes from: nats per test token, a '
          f"group's (loss - {page.folder.reference}'s loss) × its share of test tokens, "
          'summing to the all-token gap:', '',
          table_row(['point', 'all tokens', *[f'{grouping} `{n}` ({s:.1%})'
                                          for n, s in shares.items()]]),
          '|---|---:|' + '---:|' * len(shares),
          *[table_row([label, f'{found.gap:+.3f}', *[f'{found.parts[n]:+.3f}' for n in shares]])
            for label, found in rows], '']


def replace_section(readme: str, section: str, folder: folders.Folder) -> str:
  """`readme` with its text from the folder's begin marker to its end marker replaced by
  `section`."""
  start, end = readme.find(folder.begin), readme.find(folder.end)
  if start < 0 or end < start:
    raise ValueError(f'README has no results section between the markers {folder.begin!r} and '
                     f'{folder.end!r}; add them where the section belongs.')
  return readme[:start] + section.rstrip('\n') + readme[end + len(folder.end):]
