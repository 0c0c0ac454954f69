"""The memory-perplexity front of a results folder: which method gives the lowest perplexity
within a given share of the reference's float32 vocabulary bytes, and whether factorization
and quantization compose.

The candidates are every trained point and every post-training quantization of one, at every
configuration tried, aggregated over seeds (a method: kind, head and how the tables are
stored, table.precision). Within each share of Folder.byte_shares the point of lowest valid
perplexity is chosen (the test split chooses nothing); its test perplexity is compared with
the reference in float32 at its own configuration of lowest valid perplexity, and with the
best point of any other method within the same bytes, by the pooled t-test (comparison.py).

Compose: each factorized kind quantized after or during training against the reference
quantized to the bytes nearest its own (log ratio). Factorization and quantization compose
where the factorized one is lower beyond seed noise at no more bytes.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from factorized.analysis import stats
from factorized.analysis import table as sweep_table
from factorized.analysis.comparison import (
  TESTED,
  Decomposition,
  Points,
  gap_text,
  mean_sd,
  point_label,
)

VALID = 'best_valid_ppl'  # chooses within a budget: the valid of the model whose test is read
COMPOSE, APART, NO_VERDICT = 'compose', 'apart', 'no verdict'  # Pair.verdict


def candidates(page: Points) -> pd.DataFrame:
  """Every trained point and post-training quantization at every configuration tried, one
  aggregated row each, with its `precision` and `method_key` (kind, head, precision)."""
  rows = page.table[page.table['method'].isin((sweep_table.TRAINED,
                                               sweep_table.POSTHOC_QUANT))]
  if rows.empty:
    return pd.DataFrame()
  groups = sweep_table.aggregate(rows)
  groups = groups[groups[f'{TESTED}_mean'].astype(float).notna()
                  & groups[f'{VALID}_mean'].astype(float).notna()]
  precisions = [sweep_table.precision(row) for _, row in groups.iterrows()]
  keys = [(row['kind'], sweep_table.head_label(row), p)
          for (_, row), p in zip(groups.iterrows(), precisions, strict=True)]
  return groups.assign(precision=precisions, method_key=keys)


def label(row: pd.Series) -> str:
  """'tt 64 int8 post-training', 'dense float32', 'dpq 32 codes'."""
  return f'{point_label(row)} {row["precision"]}'


def _best(rows: pd.DataFrame) -> pd.Series | None:
  if rows.empty:
    return None
  return rows.loc[rows[f'{VALID}_mean'].astype(float).idxmin()]


@dataclasses.dataclass(frozen=True)
class Budget:
  """Within `share` of the reference's float32 bytes (`limit`): the point of lowest valid
  perplexity, and the best of any other method, each with its test against `best`."""

  share: float
  limit: float
  best: pd.Series | None
  versus_reference: stats.TTest | None
  runner_up: pd.Series | None
  versus_runner_up: stats.TTest | None
  where: Decomposition | None = None  # where best's gap to the reference comes from


@dataclasses.dataclass(frozen=True)
class Pair:
  """A factorized kind stored quantized against the reference quantized to the nearest
  bytes."""

  factorized: pd.Series
  reference: pd.Series
  test: stats.TTest
  where: Decomposition | None = None  # where the gap comes from, by frequency group

  @property
  def verdict(self) -> str:
    """COMPOSE (the factorized one lower beyond seed noise at no more bytes), APART (the
    reference quantized lower beyond seed noise at no more bytes) or NO_VERDICT."""
    fewer = float(self.factorized['vocab_bytes']) <= float(self.reference['vocab_bytes'])
    lower = self.factorized[f'{TESTED}_mean'] < self.reference[f'{TESTED}_mean']
    if self.test.real and lower and fewer:
      return COMPOSE
    if self.test.real and not lower and not fewer:
      return APART
    return NO_VERDICT


@dataclasses.dataclass(frozen=True)
class Front:
  reference: pd.Series  # the reference in float32 at its configuration of lowest valid ppl
  budgets: list[Budget]
  pairs: list[Pair]
  precisions: frozenset[str]  # how the candidates store their tables (table.precision)

  def _compared(self) -> dict[tuple[object, object], stats.TTest | None]:
    """{(row a, row b): test} of every comparison the front prints, budgets first, each row
    by its index among the candidates; the same two points at two shares are one
    comparison."""
    found = []
    for b in self.budgets:
      if b.best is not None:
        found.append((b.best.name, self.reference.name, b.versus_reference))
      if b.runner_up is not None:
        found.append((b.best.name, b.runner_up.name, b.versus_runner_up))
    found += [(p.factorized.name, p.reference.name, p.test) for p in self.pairs]
    return {(a, b): test for a, b, test in found}

  def tests(self) -> list[stats.TTest]:
    """The distinct tests the front makes, in order (a family for stats.adjust)."""
    return list(self._compared().values())

  def adjusted(self) -> Front:
    """The front with its distinct tests Holm-adjusted as one family."""
    compared = self._compared()
    adjusted = dict(zip(compared, stats.adjust(list(compared.values())), strict=True))
    budgets = [b if b.best is None else dataclasses.replace(
        b, versus_reference=adjusted[b.best.name, self.reference.name],
        versus_runner_up=None if b.runner_up is None
        else adjusted[b.best.name, b.runner_up.name]) for b in self.budgets]
    pairs = [dataclasses.replace(p, test=adjusted[p.factorized.name, p.reference.name])
             for p in self.pairs]
    return dataclasses.replace(self, budgets=budgets, pairs=pairs)


def front(page: Points) -> Front | None:
  """The folder's memory front; None where no point other than the reference in float32 fits
  the largest share of its bytes."""
  points = candidates(page)
  if points.empty:
    return None
  name = page.folder.reference
  own = points[(points['kind'] == name) & (points['head'] == 'tied')
               & (points['precision'] == 'float32')]
  reference = _best(own)
  if reference is None:
    return None
  full = float(reference['vocab_bytes'])
  budgets = []
  for share in sorted(page.folder.byte_shares, reverse=True):
    within = points[points['vocab_bytes'].astype(float) <= share * full]
    best = _best(within)
    if best is None:
      budgets.append(Budget(share, share * full, None, None, None, None))
      continue
    others = within[within['method_key'] != best['method_key']]
    runner = _best(others)
    budgets.append(Budget(share, share * full, best, page.test(best, reference),
                          runner, None if runner is None else page.test(best, runner),
                          page.decompose(best, reference)))
  if all(b.best is None for b in budgets):
    return None
  return Front(reference, budgets, _pairs(page, points), frozenset(points['precision']))


def _pairs(page: Points, points: pd.DataFrame) -> list[Pair]:
  stored = points[points[sweep_table.QUANT_BITS].fillna(0).astype(int) > 0] if (
      sweep_table.QUANT_BITS in points) else points.iloc[:0]
  name = page.folder.reference
  quantized = stored[(stored['kind'] == name) & (stored['head'] == 'tied')]
  pairs = []
  for _, row in stored[stored['kind'] != name].iterrows():
    if quantized.empty:
      break
    distance = (quantized['vocab_bytes'].astype(float) / float(row['vocab_bytes'])).map(
        lambda ratio: abs(math.log(ratio)))
    nearest = quantized.loc[distance.idxmin()]
    pairs.append(Pair(row, nearest, page.test(row, nearest), page.decompose(row, nearest)))
  return pairs


def _share(row: pd.Series, reference: pd.Series) -> str:
  return f'{float(row["vocab_bytes"]) / float(reference["vocab_bytes"]):.1%}'


def _versus(row: pd.Series, base: pd.Series, test: stats.TTest) -> str:
  return gap_text(row[f'{TESTED}_mean'] / base[f'{TESTED}_mean'] - 1, test)


def budget_lines(found: Front, name: str) -> list[str]:
  """One bullet per share: the chosen point, its test perplexity against the reference and
  against the runner-up."""
  lines = []
  for budget in found.budgets:
    if budget.best is None:
      lines.append(f'At most {budget.share:.0%} of {name} float32\'s bytes ({int(budget.limit):,}'
                   '): no point trained or quantized so far fits.')
      continue
    best, reference = budget.best, found.reference
    text = (f'At most {budget.share:.0%} of {name} float32\'s bytes ({int(budget.limit):,}): '
            f'**{label(best)}** ({int(best["vocab_bytes"]):,} bytes, {_share(best, reference)}'
            f'; {best["seeds"]} seed{"s" if best["seeds"] > 1 else ""}), test '
            f'{mean_sd(best)}, {_versus(best, reference, budget.versus_reference)} against '
            f'{name} float32')
    if budget.runner_up is not None:
      runner = budget.runner_up
      text += (f'; the best other method there, {label(runner)} ({_share(runner, reference)}'
               f', test {mean_sd(runner)}): {label(best)} '
               f'{_versus(best, runner, budget.versus_runner_up)}')
    lines.append(text + '.' + _origin(budget.where, budget.versus_reference, name))
  return lines


def _origin(where: Decomposition | None, test: stats.TTest | None, name: str) -> str:
  """' Against dense float32, the frequent types ... carry ...': where a gap comes from."""
  if where is None or test is None or not where.gap:
    return ''
  reading = where.reading(test.real)
  return (f' Of its gap to {name} ({where.gap:+.3f} nats per test token): '
          f'{reading[0].lower()}{reading[1:]}')


def compose_lines(found: Front, name: str) -> list[str]:
  """Whether factorization and quantization compose: each quantized factorized point against
  the reference quantized to the nearest bytes, with the verdict."""
  lines = []
  for pair in found.pairs:
    row, base, test = pair.factorized, pair.reference, pair.test
    verdict = {COMPOSE: 'they compose here: lower perplexity at no more bytes',
               APART: f'they do not compose here: {name} quantized is lower at no more bytes',
               NO_VERDICT: 'no verdict at these sizes'}[pair.verdict]
    origin = '' if pair.where is None else f' ({pair.where.gap:+.3f} nats per test token)'
    lines.append(f'{label(row)} ({_share(row, found.reference)} of {name} float32\'s bytes, '
                 f'{mean_sd(row)}) against {label(base)} ({_share(base, found.reference)}, '
                 f'{mean_sd(base)}): {_versus(row, base, test)}{origin}; {verdict}.')
  return lines


def compose_summary(found: Front, name: str) -> str:
  """The compose verdicts in one sentence: how many pairs each, naming those with one."""
  by_verdict: dict[str, list[str]] = {COMPOSE: [], APART: [], NO_VERDICT: []}
  for pair in found.pairs:
    by_verdict[pair.verdict].append(
        f'{label(pair.factorized)} against {label(pair.reference)} '
        f'{_versus(pair.factorized, pair.reference, pair.test)}')
  parts = []
  if by_verdict[COMPOSE]:
    parts.append('lower perplexity at no more bytes beyond seed noise for '
                 + '; '.join(by_verdict[COMPOSE]))
  if by_verdict[APART]:
    parts.append(f'{name} quantized lower at no more bytes beyond seed noise for '
                 + '; '.join(by_verdict[APART]))
  if by_verdict[NO_VERDICT]:
    which = f'the other {len(by_verdict[NO_VERDICT])}' if parts else 'any'
    parts.append(f'no verdict for {which} (within seed noise, untested for it, or smaller '
                 'only at a higher perplexity)')
  return (f'Factorization and quantization: of {len(found.pairs)} factorized points stored '
          f'quantized, each against {name} quantized to the nearest bytes, '
          + '; '.join(parts) + '.')


def intro(found: Front, name: str) -> str:
  return (f'Vocabulary bytes as stored (float32 tables; quantized values with their scales; '
          f'codes and codebooks). {name} float32: {int(found.reference["vocab_bytes"]):,} bytes, '
          f'test {mean_sd(found.reference)} at its configuration of lowest valid perplexity. '
          'Within each share of those bytes, the point of lowest valid perplexity among every '
          'kind, precision and configuration tried (the test split chooses nothing), against '
          f'{name} float32 and against the best point of another method within the same bytes:')
