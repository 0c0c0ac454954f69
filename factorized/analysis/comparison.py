r"""A results folder's points and how two of them compare (`Points`): the grid's rows
aggregated over seeds, the seed noise pooled over the points with several seeds, the
t-test of a difference (stats.py), step matching, and where a gap comes from by frequency
group (`decompose`); with the text helpers the findings and the headline share.

Where a gap comes from: per frequency group g, (loss_a,g - loss_b,g) x share_g in nats per
test token, each side's loss the mean over its seeds; the parts sum to the all-token gap in
mean test loss. The groups are the frequency classes (train count) where both sides have
them, else the frequency bands (rank in train frequency). The frequent-type perplexity
pools the classes of at least eval.frequent_count train occurrences where the reference
has them, else every band but the open-ended rarest one and <unk>.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from factorized.analysis import folders, stats
from factorized.analysis import table as sweep_table

TESTED = 'test_ppl'  # the metric every gap is read on, with the frequent-type perplexity


def p_text(test: stats.TTest) -> str:
  """'p = 0.034', 'p < 0.001', 'Holm p = 0.03' (adjusted)."""
  p = test.p if test.p_adjusted is None else test.p_adjusted
  name = 'p' if test.p_adjusted is None else 'Holm p'
  return f'{name} < 0.001' if p < 0.001 else f'{name} = {p:.2g}'


def gap_text(relative: float, test: stats.TTest) -> str:
  """'+5.1%, p = 0.002' when the test calls it real, '+1.4%, within seed noise, p = 0.45'
  when not (never a verdict), '+1.4%, untested for seed noise' without a pooled sd."""
  text = f'{relative:+.1%}'
  if not test.tested:
    return f'{text}, untested for seed noise'
  return f'{text}, {p_text(test)}' if test.real else f'{text}, within seed noise, {p_text(test)}'


def mean_sd(row: pd.Series | None, metric: str = TESTED) -> str:
  """An aggregated row's `metric` as '174.0 ± 1.6' ('-' where it has none)."""
  if row is None or f'{metric}_mean' not in row:
    return '-'
  return stats.mean_sd_text(float(row[f'{metric}_mean']), float(row[f'{metric}_std']))


def ppl_text(value) -> str:
  """'174.0', or '-' for no number."""
  return f'{value:.1f}' if sweep_table.is_number(value) else '-'


def training_steps(row: pd.Series) -> float:
  """The training steps behind a row (NaN where not recorded)."""
  value = row.get('steps')
  return math.nan if value is None or pd.isna(value) else int(value)


def point_label(row: pd.Series) -> str:
  """'svd 32', 'dense', 'svd 16 + untied svd 16', 'dpq 64 (dpq_groups=32)': a point's input
  kind, rank and shape, and its head."""
  text = input_label(row)
  return text if row['head'] == 'tied' else f'{text} + {sweep_table.head_label(row)}'


def config_text(row: pd.Series, fields: Sequence[str]) -> str:
  """'lr 0.003, num_steps 3000': a row's values of `fields`."""
  return ', '.join(f'{f} {row[f]:g}' if sweep_table.is_number(row[f]) else f'{f} {row[f]}'
                   for f in fields)


def table_row(cells: list) -> str:
  """One Markdown table row; an empty cell stays one space wide ('| dense | | ...')."""
  return '|' + '|'.join(f' {c} ' if str(c) else ' ' for c in cells) + '|'


def group_name(prefix: str, name: str) -> str:
  """'band `10001+`' or 'class `0`'."""
  # Backquoted: a bare <unk> is an HTML tag to Markdown renderers, and vanishes.
  return f'band `{name}`' if prefix == sweep_table.BAND_PREFIX else f'class `{name}`'


@dataclasses.dataclass(frozen=True)
class Decomposition:
  """An all-token gap in mean test loss (nats per test token, a - b over each side's seed
  means) and each frequency group's part of it, (loss_a,g - loss_b,g) x share_g."""

  prefix: str  # the grouping: table.BAND_PREFIX or table.CLASS_PREFIX
  gap: float
  parts: dict[str, float]
  shares: dict[str, float]
  frequent_count: int | None = None  # classes: the train count the frequent ones start at

  def carriers(self) -> tuple[list[str], float]:
    """(the fewest groups whose parts, largest in the gap's direction first, make up the
    whole gap; the other groups' parts summed). Sums against the gap's sign mean those
    groups alone carry it entirely."""
    sign = 1.0 if self.gap >= 0 else -1.0
    chosen, total = [], 0.0
    for name in sorted(self.parts, key=lambda n: -sign * self.parts[n]):
      if sign * self.parts[name] <= 0 or sign * total >= sign * self.gap:
        break
      chosen.append(name)
      total += self.parts[name]
    return chosen, sum(v for n, v in self.parts.items() if n not in chosen)

  def reading(self, real: bool = True) -> str:
    """Where the gap comes from, in words: 'It comes entirely from band `10001+` (6.2% of
    test tokens, -0.128 nats); the frequent types (89.8%) add +0.075.' where groups outside
    the frequent ones carry a `real` gap all, else what the frequent types and the rest
    each carry."""
    _, frequent = sweep_table.frequent_groups(self.prefix, list(self.parts),
                                              self.frequent_count)
    part = sum(self.parts[n] for n in frequent)
    share = sum(self.shares[n] for n in frequent)
    chosen, _ = self.carriers()
    if real and chosen and not set(chosen) & set(frequent) and part * self.gap <= 0:
      names = ' and '.join(group_name(self.prefix, n) for n in chosen)
      return (f'It comes entirely from {names} '
              f'({sum(self.shares[n] for n in chosen):.1%} of test tokens, '
              f'{sum(self.parts[n] for n in chosen):+.3f} nats); the frequent types '
              f'({share:.1%}) add {part:+.3f}.')
    return (f'The frequent types ({share:.1%} of test tokens) carry {part:+.3f} nats of it, '
            f'the other {1 - share:.1%} {self.gap - part:+.3f}.')


def decompose(runs_a: pd.DataFrame, runs_b: pd.DataFrame, prefix: str,
              frequent_count: int | None = None) -> Decomposition | None:
  """Where the gap of runs `a` over runs `b` (per-run rows of rows_table, each side one
  point's seeds) comes from, by the groups of `prefix` (classes: frequent from
  `frequent_count` train occurrences); None where a side lacks them or the two were scored
  on different tokens (the groups' shares differ)."""
  share_prefix = sweep_table.SHARE_PREFIX[prefix]
  names = [c.removeprefix(prefix) for c in runs_b.columns if c.startswith(prefix)]
  both = pd.concat([runs_a, runs_b])
  names = [n for n in names if both[prefix + n].notna().all()
           and both[share_prefix + n].notna().all()]
  if not names or runs_a.empty or runs_b.empty:
    return None
  shares = both[[share_prefix + n for n in names]].astype(float)
  if not np.allclose(shares, shares.iloc[0], rtol=0, atol=1e-9):
    return None

  def loss(runs: pd.DataFrame, column: str) -> float:
    return float(np.log(runs[column].astype(float)).mean())

  parts = {n: (loss(runs_a, prefix + n) - loss(runs_b, prefix + n))
           * float(shares.iloc[0][share_prefix + n]) for n in names}
  return Decomposition(prefix, loss(runs_a, TESTED) - loss(runs_b, TESTED), parts,
                       {n: float(shares.iloc[0][share_prefix + n]) for n in names},
                       frequent_count)


class Points:
  """One results folder's tables, seed noise and comparisons; counts the tests it makes."""

  def __init__(self, folder: folders.Folder):
    self.folder = folder
    root = folder.root
    rows, _ = sweep_table.collect_rows(root)
    folders.check_config(folder)
    self.table = sweep_table.rows_table(rows)
    self.keys = [*sweep_table.GROUP, *sweep_table.DERIVATION,
                 *sweep_table.swept_columns(self.table)]
    self.base = sweep_table.base_rows(self.table)
    self.every = sweep_table.aggregate(self.base)
    self.every['rank'] = self.every['rank'].astype('Int64')
    # Most paragraphs compare tied heads and the untied dense head; heads of their own kind
    # have theirs (_split, _head_map).
    self.groups = self.every[(self.every['head'] == 'tied')
                             | (self.every['head_kind'] == 'dense')]
    self.reference = self.pick(self.groups, folder.reference)
    if self.reference is None:
      raise ValueError(f'{root}: no tied {folder.reference} point has finished; nothing to '
                       'compare with.')
    every_config = sweep_table.aggregate(self.trained(self.table))
    self.frequent = self._frequent_column()
    # Where classes are frequent from (the runs' eval.frequent_count, read off their column).
    self.frequent_classes_from = next(
        (sweep_table.frequent_count(c) for c in self.table.columns
         if sweep_table.frequent_count(c) is not None), None)
    self.pooled = {metric: stats.pooled_std(every_config[f'{metric}_std'].astype(float),
                                            every_config['seeds'])
                   for metric in (TESTED, self.frequent) if metric}
    self.seeded = every_config[every_config['seeds'] > 1]
    self.compared: set[str] = set()  # the distinct comparisons tested

  def _frequent_column(self) -> str | None:
    """The frequent-type perplexity the page reads: classes' where the reference has them,
    else the bands'."""
    columns = [c for c in self.table.columns if c.startswith(sweep_table.FREQUENT_PREFIX)]
    reference = self.runs(self.reference)
    found = [c for c in columns if reference[c].notna().all()]
    by_count = [c for c in found if '@count' in c]
    return (by_count or found or [None])[0]

  def frequent_text(self) -> str:
    """What the frequent-type perplexity pools, and its share of the test tokens."""
    if self.frequent is None:
      return ''
    prefix = (sweep_table.CLASS_PREFIX if '@count' in self.frequent
              else sweep_table.BAND_PREFIX)
    names = [c.removeprefix(prefix) for c in self.table.columns if c.startswith(prefix)]
    _, members = sweep_table.frequent_groups(prefix, names,
                                             sweep_table.frequent_count(self.frequent))
    share = sum(float(self.runs(self.reference)[sweep_table.SHARE_PREFIX[prefix] + n].iloc[0])
                for n in members)
    listed = ', '.join(f'`{n}`' for n in members)
    if prefix == sweep_table.CLASS_PREFIX:
      return (f'the tokens whose type occurs at least '
              f'{sweep_table.frequent_count(self.frequent)} times in the '
              f'train split (classes {listed}: {share:.1%} of test tokens)')
    rest = ', '.join(f'`{n}`' for n in names if n not in members)
    low, high = self.frequent.split('@rank')[1].split('-')
    return (f'the tokens whose type ranks {int(low):,}–{int(high):,} in train frequency (bands '
            f'{listed}: {share:.1%} of test tokens; not {rest})')

  @staticmethod
  def trained(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame['method'] == sweep_table.TRAINED]

  @staticmethod
  def pick(groups: pd.DataFrame, kind: str | None, head: str = 'tied', rank=None,
           method: str = sweep_table.TRAINED, finetune_steps: int = 0) -> pd.Series | None:
    """The first aggregated row of this kind (None: any), head, rank and derivation (None
    if none)."""
    chosen = groups[(groups['head'] == head) & (groups['method'] == method)
                    & (groups['finetune_steps'] == finetune_steps)]
    if kind is not None:
      chosen = chosen[chosen['kind'] == kind]
    chosen = chosen[chosen['rank'].isna()] if rank is None else chosen[chosen['rank'] == rank]
    return None if chosen.empty else chosen.iloc[0]

  def same(self, a: pd.Series, b: pd.Series) -> bool:
    """Whether two aggregated rows are one point (equal on every key, NaN equal to NaN)."""
    for key in self.keys:
      if key in a.index and key in b.index:
        x, y = a[key], b[key]
        if not ((pd.isna(x) and pd.isna(y)) if pd.isna(x) or pd.isna(y) else x == y):
          return False
    return True

  def runs(self, row: pd.Series) -> pd.DataFrame:
    """The per-run rows of an aggregated row (its seeds)."""
    keys = [k for k in self.keys if k in row.index]
    return self.table.loc[sweep_table.matching(self.table, row, keys)]

  def factorized_kinds(self, groups: pd.DataFrame) -> list[str]:
    """The trained kinds other than the reference, in table order."""
    return [k for k in dict.fromkeys(self.trained(groups)['kind'])
            if k != self.folder.reference]

  def count(self, *parts) -> None:
    """Counts one comparison, once however often the page prints it."""
    self.compared.add(repr(parts))

  def test(self, a: pd.Series, b: pd.Series, metric: str = TESTED) -> stats.TTest:
    """The pooled t-test of a's mean `metric` against b's (counted)."""
    keys = [k for k in self.keys if k in a.index and k in b.index]
    self.count('pooled', metric, *(str(a[k]) for k in keys), *(str(b[k]) for k in keys))
    return stats.compare(float(a[f'{metric}_mean']), int(a['seeds']),
                         float(b[f'{metric}_mean']), int(b['seeds']),
                         self.pooled.get(metric, stats.Pooled(math.nan, 0)))

  def step_mismatch(self, a: pd.Series, b: pd.Series) -> str:
    """'' when a and b were trained for the same steps or both from scratch (their
    train.num_steps is a setting, chosen by valid perplexity like any other), else ', not
    step-matched (1,800 against 1,500 training steps)': a derived row (post-hoc SVD
    fine-tuned after its parent) meets another row only at the same steps."""
    steps_a, steps_b = training_steps(a), training_steps(b)
    if steps_a == steps_b or (a.get('method') == sweep_table.TRAINED
                              and b.get('method') == sweep_table.TRAINED):
      return ''
    def number(n: float) -> str:
      return 'unknown' if math.isnan(n) else f'{int(n):,}'
    return f', not step-matched ({number(steps_a)} against {number(steps_b)} training steps)'

  def versus(self, a: pd.Series, b: pd.Series, metric: str = TESTED) -> str:
    """a against b on `metric`: gap_text with the test, or no verdict when not
    step-matched or when a side lacks the metric."""
    mean_a, mean_b = a.get(f'{metric}_mean'), b.get(f'{metric}_mean')
    if not (sweep_table.is_number(mean_a) and sweep_table.is_number(mean_b)):
      return '-'
    relative = mean_a / mean_b - 1
    mismatch = self.step_mismatch(a, b)
    if mismatch:
      return f'{relative:+.1%}{mismatch}'
    return gap_text(relative, self.test(a, b, metric))

  def decompose(self, a: pd.Series, b: pd.Series) -> Decomposition | None:
    """Where a's gap over b comes from: by classes where both have them, else bands."""
    runs_a, runs_b = self.runs(a), self.runs(b)
    for prefix in (sweep_table.CLASS_PREFIX, sweep_table.BAND_PREFIX):
      found = decompose(runs_a, runs_b, prefix, self.frequent_classes_from)
      if found is not None:
        return found
    return None


def tuned_rows(page: Points, over: Sequence[str] | None
                ) -> tuple[pd.DataFrame, pd.Series, list[str]] | None:
  """(the tuned rows over `over` (None: every swept field) with tied heads, the reference's
  among them, the fields chosen over), or None where nothing was tuned or the reference was
  tried in one configuration only."""
  chosen = sweep_table.tuned(page.table, over=over)
  chosen = chosen[chosen['head'] == 'tied'] if not chosen.empty else chosen
  if chosen.empty:
    return None
  # tuned() keeps the fields it did not choose over as keys: the rows at the grid's values.
  for column in sweep_table.swept_columns(page.base):
    if over is not None and column not in over and column in chosen.columns:
      grid = page.base[column].map(repr).iloc[0]
      chosen = chosen[chosen[column].map(repr) == grid]
  reference = page.pick(chosen, page.folder.reference)
  if reference is None:
    return None
  fields = sorted({f for over_fields in chosen['over'] for f in over_fields.split(',') if f})
  return chosen, reference, fields


def tried_text(row: pd.Series) -> str:
  """'4', or '5 of 8' where the configurations tried are no full grid of their values."""
  return str(row['configs']) + ('' if row['grid'] == row['configs'] else f' of {row["grid"]}')


def best_step_text(row: pd.Series) -> str:
  """'1750 of 3000', '3000 of 3000 (the last: still improving)'."""
  steps = '' if math.isnan(training_steps(row)) else f' of {int(training_steps(row))}'
  return f'{row["best_step"]}{steps}' + (' (the last: still improving)' if row['best_at_last']
                                         else '')


def input_label(row: pd.Series) -> str:
  """'svd 16', 'dpq 64 (dpq_groups=32)': a point's input kind, rank and shape alone."""
  shape = row.get('shape')
  return (row['kind'] + ('' if pd.isna(row['rank']) else f' {int(row["rank"])}')
          + (f' ({shape})' if isinstance(shape, str) and shape else ''))


def by_steps(page: Points) -> tuple[list, pd.DataFrame] | None:
  """(the values of a swept train.num_steps, in order; the tied trained points at the grid's
  other settings aggregated at each), or None where train.num_steps was not swept."""
  table = page.trained(page.table)
  if 'num_steps' not in table.columns:
    return None
  for column in sweep_table.swept_columns(table):
    if column != 'num_steps':  # the grid's value of every other swept field
      table = table[table[column].map(repr) == page.base[column].map(repr).iloc[0]]
  groups = sweep_table.aggregate(table)
  groups = groups[groups['head'] == 'tied']
  steps = sorted(groups['num_steps'].dropna().unique())
  return (steps, groups) if len(steps) > 1 else None


def parent_run(page: Points, row: pd.Series) -> pd.Series | None:
  """The trained run a derived row was computed from (its test ppl and steps)."""
  runs = page.runs(row)
  if runs.empty:
    return None
  parent = page.table[(page.table['run'] == runs['run'].iloc[0])
                      & (page.table['method'] == sweep_table.TRAINED)]
  if parent.empty:
    return None
  first = parent.iloc[0]
  return pd.Series({'run': first['run'], f'{TESTED}_mean': float(first[TESTED]),
                    'steps': first['steps']})
