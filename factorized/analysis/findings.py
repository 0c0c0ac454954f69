r"""What a finished sweep shows: its results folder's README and the repository README's
headline block, generated from the folder alone.

A results folder is data plus a short description. The data: one directory per point (its
summary.json and config.json; a dense point also holds the post-hoc JSONs) and
`machine.json`. The description: `findings.json` (`Folder`): the corpus, the protocol, the
reference kind every gap is measured from, the vocabulary budget of the headline, the
published anchors and their protocol, the README markers. A second corpus, or Brown with
another vocabulary protocol, is one more folder with a few lines of findings.json:

  python -m factorized.analysis.findings results/brown --readme=README.md

rewrites `results/brown/README.md` (FINDINGS_FILE) and the README's block between the
folder's markers; tests/test_findings.py fails when either differs from the data.

Rules the text follows:
- A difference is called real only when a t-test over seeds says so (stats.py): the
  pooled-variance test, s pooled over every point with several seeds, since most points
  have one. Otherwise it is "within seed noise" and gets no verdict either way.
- The findings' p-values are per comparison and the page says how many it made; the
  headline's comparisons with the reference are one family, Holm-adjusted.
- Every gap to the reference says where it comes from: each frequency group's part in nats
  per test token, (loss_g - loss_ref_g) x share_g, summing to the all-token gap. The groups
  are the frequency classes (train count) where the summaries have them, else the frequency
  bands (rank in train frequency); the frequent-type perplexity pools the classes of at
  least table.FREQUENT_COUNT train occurrences, else every band but the rarest and <unk>.
- Rows trained for different numbers of steps (post-hoc SVD fine-tuned after its parent,
  against svd trained from scratch) are compared only at matched steps; otherwise the text
  says they are not step-matched. A post-hoc row is a function of its parent run, so it is
  read against that run without a seed-noise test.
- A published anchor is compared only under its own protocol (vocabulary size and test
  tokens); otherwise the text says the protocol differs.
- A point with at least the reference's vocabulary parameters is never called a
  compression. Tables show the grid's own settings (each swept field at its most common
  value); tuned configurations and longer runs have their own paragraphs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from factorized.analysis import report as sweep_report
from factorized.analysis import stats
from factorized.analysis import table as sweep_table
from factorized.evaluation.posthoc import POSTHOC_METHOD
from factorized.train import workdir as workdir_lib

FINDINGS_FILE = 'README.md'  # the full findings, in the results folder itself
DESCRIPTION_FILE = 'findings.json'
MACHINE_FILE = 'machine.json'
TESTED = 'test_ppl'  # the metric every gap is read on, with the frequent-type perplexity


@dataclasses.dataclass(frozen=True)
class Anchor:
  """A published test perplexity and the protocol it was measured under."""

  name: str
  test_ppl: float
  vocab_size: int
  test_tokens: int
  source: str = ''


@dataclasses.dataclass(frozen=True)
class Folder:
  """A results folder's description (its findings.json): what its findings need besides
  the data. `config`: {dotted field: value} every point's config must hold (a field a
  summary does not record, even migrated, passes); `markers`: the README block's name."""

  root: pathlib.Path
  title: str = 'Results'
  corpus: str = ''
  protocol: str = ''
  reference: str = 'dense'
  budget: float = 0.25  # the headline's vocabulary budget, a fraction of the reference's
  budget_slack: float = 0.05  # points up to this much above the budget count as within it
  thresholds: tuple[float, ...] = (0.02, 0.05)
  markers: str = ''
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  anchors: tuple[Anchor, ...] = ()

  @classmethod
  def load(cls, root: str | pathlib.Path) -> Folder:
    """The description in `root`/findings.json (the defaults where it has none)."""
    root = pathlib.Path(root)
    path = root / DESCRIPTION_FILE
    fields = json.loads(path.read_text()) if path.exists() else {}
    known = {f.name for f in dataclasses.fields(cls)} - {'root'}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f'{path}: unknown fields {unknown}; known: {sorted(known)}.')
    anchors = tuple(Anchor(**anchor) for anchor in fields.pop('anchors', ()))
    thresholds = tuple(fields.pop('thresholds', cls.thresholds))
    return cls(root=root, anchors=anchors, thresholds=thresholds, **fields)

  @property
  def name(self) -> str:
    """The README block's name: `markers`, or 'results:<folder> headline'."""
    return self.markers or f'results:{self.root.name} headline'

  @property
  def command(self) -> str:
    return f'python -m factorized.analysis.findings {self.root.as_posix()} --readme=README.md'

  @property
  def generated(self) -> str:
    return (f'generated from {self.root.as_posix()} by `{self.command}`; do not edit by hand')

  @property
  def header(self) -> str:
    """The start of the folder's FINDINGS_FILE."""
    return f'# {self.title}\n\n<!-- {self.generated} -->\n'

  @property
  def begin(self) -> str:
    return f'<!-- {self.name} begin: {self.generated} -->'

  @property
  def end(self) -> str:
    return f'<!-- {self.name} end -->'


# --- how a comparison reads ------------------------------------------------------------

def _p(test: stats.TTest) -> str:
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
  return f'{text}, {_p(test)}' if test.real else f'{text}, within seed noise, {_p(test)}'


def _mean_sd(row: pd.Series | None, metric: str = TESTED) -> str:
  if row is None or f'{metric}_mean' not in row:
    return '-'
  return stats.mean_sd_text(float(row[f'{metric}_mean']), float(row[f'{metric}_std']))


def _ppl(value) -> str:
  return f'{value:.1f}' if sweep_table.is_number(value) else '-'


def _steps(row: pd.Series) -> float:
  value = row.get('steps')
  return math.nan if value is None or pd.isna(value) else int(value)


def _point(row: pd.Series) -> str:
  """'svd 32', 'dense', 'svd 16 + untied svd 16': a point's input kind, rank and head."""
  text = row['kind'] + ('' if pd.isna(row['rank']) else f' {int(row["rank"])}')
  return text if row['head'] == 'tied' else f'{text} + {sweep_table.head_label(row)}'


def _config(row: pd.Series, fields: Sequence[str]) -> str:
  """'lr 0.003, num_steps 3000': a row's values of `fields`."""
  return ', '.join(f'{f} {row[f]:g}' if sweep_table.is_number(row[f]) else f'{f} {row[f]}'
                   for f in fields)


def _cells(cells: list) -> str:
  """One Markdown table row; an empty cell stays one space wide ('| dense | | ...')."""
  return '|' + '|'.join(f' {c} ' if str(c) else ' ' for c in cells) + '|'


def _group_name(prefix: str, name: str) -> str:
  # Backquoted: a bare <unk> is an HTML tag to Markdown renderers, and vanishes.
  return f'band `{name}`' if prefix == sweep_table.BAND_PREFIX else f'class `{name}`'


# --- where a gap comes from --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Decomposition:
  """An all-token gap in mean test loss (nats per test token, a - b over each side's seed
  means) and each frequency group's part of it, (loss_a,g - loss_b,g) x share_g."""

  prefix: str  # the grouping: table.BAND_PREFIX or table.CLASS_PREFIX
  gap: float
  parts: dict[str, float]
  shares: dict[str, float]

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
    _, frequent = sweep_table.frequent_groups(self.prefix, list(self.parts))
    part = sum(self.parts[n] for n in frequent)
    share = sum(self.shares[n] for n in frequent)
    chosen, _ = self.carriers()
    if real and chosen and not set(chosen) & set(frequent) and part * self.gap <= 0:
      names = ' and '.join(_group_name(self.prefix, n) for n in chosen)
      return (f'It comes entirely from {names} '
              f'({sum(self.shares[n] for n in chosen):.1%} of test tokens, '
              f'{sum(self.parts[n] for n in chosen):+.3f} nats); the frequent types '
              f'({share:.1%}) add {part:+.3f}.')
    return (f'The frequent types ({share:.1%} of test tokens) carry {part:+.3f} nats of it, '
            f'the other {1 - share:.1%} {self.gap - part:+.3f}.')


def decompose(runs_a: pd.DataFrame, runs_b: pd.DataFrame, prefix: str) -> Decomposition | None:
  """Where the gap of runs `a` over runs `b` (per-run rows of rows_table, each side one
  point's seeds) comes from, by the groups of `prefix`; None where a side lacks them or the
  two were scored on different tokens (the groups' shares differ)."""
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
                       {n: float(shares.iloc[0][share_prefix + n]) for n in names})


# --- the page ---------------------------------------------------------------------------

class _Page:
  """One results folder's tables, seed noise and comparisons; counts the tests it makes."""

  def __init__(self, folder: Folder):
    self.folder = folder
    root = folder.root
    rows, _ = sweep_table.collect_rows(root)
    _check_config(folder)
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
    _, members = sweep_table.frequent_groups(prefix, names)
    share = sum(float(self.runs(self.reference)[sweep_table.SHARE_PREFIX[prefix] + n].iloc[0])
                for n in members)
    listed = ', '.join(f'`{n}`' for n in members)
    if prefix == sweep_table.CLASS_PREFIX:
      return (f'the tokens whose type occurs at least {sweep_table.FREQUENT_COUNT} times in the '
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
    """'' when a and b were trained for the same steps, else ', not step-matched (1,800
    against 1,500 training steps)'."""
    steps_a, steps_b = _steps(a), _steps(b)
    if steps_a == steps_b:
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
      found = decompose(runs_a, runs_b, prefix)
      if found is not None:
        return found
    return None


def _check_config(folder: Folder) -> None:
  """Every point's config holds the description's `config` values (fails naming the run)."""
  if not folder.config:
    return
  for run_dir in sweep_table.run_dirs(folder.root):
    path = run_dir / 'summary.json'
    if not path.exists():
      continue
    config = workdir_lib.migrate(json.loads(path.read_text())['config'])
    for field, expected in folder.config.items():
      value: Any = config
      for part in field.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
      if value is not None and value != expected:
        raise ValueError(f'{run_dir}: {field}={value!r}, but {folder.root / DESCRIPTION_FILE} '
                         f'says every point of this folder has {field}={expected!r}; move the '
                         'run to the folder of its protocol.')


# --- the findings' sections ---------------------------------------------------------------

def _summary_table(page: _Page) -> list[str]:
  reference = page.reference
  lines = [f'| kind | head | rank | seeds | vocab params | test ppl | vs {page.folder.reference} '
           '| frequent-type ppl | valid ppl |', '|---|---|---:|---:|---:|---:|---|---:|---:|']
  for _, row in page.every[(page.every['head'] == 'tied')
                           | (page.every['head_kind'] == 'dense')].iterrows():
    if row['method'] == sweep_table.TRAINED:
      versus = '' if page.same(row, reference) else page.versus(row, reference)
    else:  # against the run it was computed from, not the seeds' mean: no seed noise
      parent = _parent(page, row)
      versus = '-' if parent is None else (
          f'{row[f"{TESTED}_mean"] / parent[f"{TESTED}_mean"] - 1:+.1%} vs its parent '
          f'{parent["run"]}{page.step_mismatch(row, parent)}')
    rank = '' if pd.isna(row['rank']) else str(int(row['rank']))
    lines.append(f'| {row["kind"]} | {sweep_table.head_label(row)} | {rank} | {row["seeds"]} | '
                 f'{int(row["vocab_params"]):,} | {_mean_sd(row)} | {versus} | '
                 f'{_mean_sd(row, page.frequent) if page.frequent else "-"} | '
                 f'{_mean_sd(row, "valid_ppl")} |')
  return lines


def _parent(page: _Page, row: pd.Series) -> pd.Series | None:
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


def _anchors(page: _Page) -> list[str]:
  """The reference against the published anchors, only where their protocol is ours."""
  if not page.folder.anchors:
    return []
  run = page.runs(page.reference)['run'].iloc[0]
  summary = json.loads((page.folder.root / run / 'summary.json').read_text())
  groups = summary.get('test_bands') or summary.get('test_classes') or {}
  vocab, tokens = summary.get('vocab_size'), sum(g.get('tokens', 0) for g in groups.values())
  reference = f'{page.folder.reference} (tied, {_mean_sd(page.reference)})'
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


def _thresholds(page: _Page) -> list[str]:
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
    parts = []
    for threshold in page.folder.thresholds:
      within = points[points[f'{TESTED}_mean']
                      <= (1 + threshold) * reference[f'{TESTED}_mean']]
      if within.empty:
        best = points.loc[points[f'{TESTED}_mean'].astype(float).idxmin()]
        parts.append(f'never within {threshold:.0%} up to rank {int(points["rank"].max())} '
                     f'(best {_ppl(best[f"{TESTED}_mean"])} at rank {int(best["rank"])}: '
                     f'{page.versus(best, reference)})')
      else:
        first = within.iloc[0]
        parts.append(f'within {threshold:.0%} from rank {int(first["rank"])} '
                     f'({_ppl(first[f"{TESTED}_mean"])}, {int(first["vocab_params"]):,} vocab '
                     f'parameters: {page.versus(first, reference)})')
    if not full.empty:
      parts.append(f'rank {", ".join(str(int(r)) for r in full["rank"])} has at least '
                   f"{page.folder.reference}'s vocabulary parameters (no compression)")
    lines.append(f'- **{kind}**: ' + '; '.join(parts) + '.')
  return lines


def _noise(page: _Page) -> list[str]:
  seeded = page.trained(page.groups)
  seeded = seeded[(seeded['seeds'] > 1) & (seeded['head'] == 'tied')]
  pooled = page.pooled[TESTED]
  if not pooled.df:
    return ['- Seed noise: no point has more than one seed yet, so no difference is tested.']
  reference = page.reference
  stds = ', '.join(f'{_point(row)} ±{row[f"{TESTED}_std"]:.1f} ({row["seeds"]} seeds)'
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
      page.count('welch', _point(row))
      relative = row[f'{TESTED}_mean'] / reference[f'{TESTED}_mean'] - 1
      welch.append(f'{_point(row)} {gap_text(relative, test)}')
  if welch:
    lines.append("- Welch's t-test, which does not assume equal spreads, on the points with "
                 f'several seeds against {page.folder.reference}: ' + '; '.join(welch) + '.')
  close = []
  for _, row in page.trained(page.groups[page.groups['head'] == 'tied']).iterrows():
    if (row['kind'] != page.folder.reference and not pd.isna(row['rank'])
        and row['vocab_params'] < reference['vocab_params']):  # compressions only
      test = page.test(row, reference)
      if test.tested and not test.real:
        close.append(f'{_point(row)} ({row["seeds"]} seed{"s" if row["seeds"] > 1 else ""}, '
                     f'{_p(test)})')
  lines.append(f'- Compressions within seed noise of {page.folder.reference}'
               + (f': {", ".join(close)}.' if close else ': none.'))
  return lines


def _where(page: _Page) -> list[str]:
  """The decomposition of every gap to the reference the findings print: the grid's points,
  the tuned configurations and the longer runs, one table per grouping."""
  reference, rows = page.reference, []
  for _, row in page.trained(page.every).iterrows():
    if not page.same(row, reference):
      rows.append((_point(row), row, reference))
  chosen = _tuned_rows(page, None)
  if chosen is not None:
    tuned, tuned_reference, fields = chosen
    for _, row in tuned.iterrows():
      if not page.same(row, tuned_reference):
        rows.append((f'{_point(row)} at its tuned {_config(row, fields)} (vs '
                     f'{page.folder.reference} at its own)', row, tuned_reference))
  by_steps = _by_steps(page)
  if by_steps is not None:
    steps, at_steps = by_steps
    for n in steps[1:]:
      at = at_steps[at_steps['num_steps'] == n]
      base = page.pick(at, page.folder.reference)
      for _, row in at.iterrows():
        if base is not None and not page.same(row, base):
          rows.append((f'{_point(row)} at {n} steps (vs {page.folder.reference} at {n})', row,
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
      lines.append(_cells([label, f'{found.gap:+.3f}',
                           *[f'{found.parts[n]:+.3f}' for n in names],
                           page.versus(row, base),
                           page.versus(row, base, page.frequent) if page.frequent else '-']))
    lines.append('')
  return lines


def _posthoc(page: _Page) -> list[str]:
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
      cells.append(_ppl(row[f'{TESTED}_mean']) if row is not None else '-')
    scratch = page.pick(page.groups, 'svd', rank=rank)
    lines.append('| ' + ' | '.join([cells[0], params, *cells[1:], _mean_sd(scratch)]) + ' |')
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


def _against_scratch(page: _Page, derived: pd.DataFrame, series: tuple[str, int], name: str,
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
    entry = f'{rank} ({relative:+.1%}, {_p(test)})'
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


def _control(page: _Page, derived: pd.DataFrame, series: list[tuple[str, int]]) -> list[str]:
  """The compute-matched control (the parent trained the same extra steps), and what the
  fine-tuned rows that truncate nothing show against it."""
  lines = []
  for _, row in page.groups[page.groups['method'] == sweep_table.FINETUNED].iterrows():
    parent, steps = _parent(page, row), int(row['finetune_steps'])
    if parent is None:
      continue
    change = row[f'{TESTED}_mean'] / parent[f'{TESTED}_mean'] - 1
    lines.append(f'Compute-matched control: the parent {parent["run"]} trained the same {steps} '
                 f'steps further ({row["kind"]}) reaches {_ppl(row[f"{TESTED}_mean"])} against '
                 f'its own {_ppl(parent[f"{TESTED}_mean"])} ({change:+.1%}: the same run '
                 'continued, no seed noise between them).')
    for method, ft in series:
      if ft != steps:
        continue
      for _, full in derived[(derived['method'] == method) & (derived['finetune_steps'] == ft)
                             & (derived['vocab_params'] >= page.reference['vocab_params'])
                             ].iterrows():
        lines.append(f'At rank {int(full["rank"])} nothing is truncated (post-hoc SVD is the '
                     f'same function as {parent["run"]}); {steps} fine-tuning steps in svd form '
                     f'end at {_ppl(full[f"{TESTED}_mean"])} against the control\'s '
                     f'{_ppl(row[f"{TESTED}_mean"])} at the same steps: '
                     f'{page.versus(full, row)}.')
  return lines


def _heads(page: _Page) -> list[str]:
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
                 + (f'{int(tied["vocab_params"]):,} | {_mean_sd(tied)}' if tied is not None
                    else '- | -')
                 + f' | {int(row["vocab_params"]):,} | {_mean_sd(row)} |')
    if tied is not None:
      name = row['kind'] + ('' if rank is None else f' {rank}')
      gaps.append(f'{name} {page.versus(row, tied)}, for '
                  f'{int(row["vocab_params"] - tied["vocab_params"]):,} more parameters')
  if gaps:
    lines += ['', '- Untying the head changes test perplexity by: ' + '; '.join(gaps) + '.']
  return lines


def _split(page: _Page) -> list[str]:
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
  near = near.assign(_valid=near['valid_ppl_mean'].astype(float)).sort_values(
      ['_valid', 'vocab_params'], kind='stable')
  lines = ['**The output head as its own factorization**: every point within '
           f'{folder.budget * (1 + folder.budget_slack):.0%} of {folder.reference}\'s vocabulary '
           f'parameters ({int(limit):,}), tied or with an untied head of its own kind, by valid '
           'perplexity (the vocabulary parameters are the input\'s plus the head\'s):', '',
           f'| input | head | vocab params | of {folder.reference} | seeds | valid ppl | test ppl '
           f'| vs {folder.reference} |', '|---|---|---:|---:|---:|---:|---:|---|']
  for _, row in near.iterrows():
    lines.append(f'| {_point(row) if row["head"] == "tied" else _input(row)} | '
                 f'{sweep_table.head_label(row)} | {int(row["vocab_params"]):,} | '
                 f'{row["vocab_params"] / reference["vocab_params"]:.1%} | {row["seeds"]} | '
                 f'{_mean_sd(row, "valid_ppl")} | {_mean_sd(row)} | '
                 f'{page.versus(row, reference)} |')
  tied, split = near[near['head'] == 'tied'], near[near['head'] == 'untied']
  if not tied.empty and not split.empty:
    best_tied, best_split = tied.iloc[0], split.iloc[0]
    lines += ['', f'- Best split by valid perplexity: input {_input(best_split)}, head '
              f'{sweep_table.head_label(best_split)}: test {_mean_sd(best_split)}, '
              f'{page.versus(best_split, best_tied)} against the best tied point there '
              f'({_point(best_tied)}, {_mean_sd(best_tied)}).']
    same = tied[(tied['kind'] == best_split['kind']) & (
        (tied['vocab_params'] - best_split['vocab_params']).abs()
        <= folder.budget_slack * best_split['vocab_params'])]
    if not same.empty:
      whole = same.iloc[0]
      lines.append(f'- Against the same budget in one tied {whole["kind"]} table '
                   f'({_point(whole)}, {int(whole["vocab_params"]):,} vocab params, '
                   f'{_mean_sd(whole)}): {page.versus(best_split, whole)}.')
    others = [f'{_input(row)} + {sweep_table.head_label(row).removeprefix("untied ")} '
              f'({_mean_sd(row)}): {page.versus(best_split, row)}'
              for _, row in split.iloc[1:].iterrows()]
    if others:
      lines.append('- The best split against the other splits there: ' + '; '.join(others)
                   + '.')
  return [*lines, '']


def _input(row: pd.Series) -> str:
  """'svd 16': a point's input kind and rank alone."""
  return row['kind'] + ('' if pd.isna(row['rank']) else f' {int(row["rank"])}')


def _head_map(page: _Page) -> list[str]:
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
    return f'{_mean_sd(low)} → {_mean_sd(high)} ({page.versus(high, low)})'

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
          mirrors.append(f'{kind} {rank} + {head_kind} {head_rank} ({_mean_sd(row)}) against '
                         f'{kind} {head_rank} + {head_kind} {rank} ({_mean_sd(mirror)}): '
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


def _tuned_rows(page: _Page, over: Sequence[str] | None
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


def _tuned(page: _Page) -> list[str]:
  """The tuned configurations: over the learning rate alone (the tuning plot's) and over
  every swept field, each against the reference at its own, with the test; which chosen
  values sit at the edge of those tried, and whether the chosen runs still improved."""
  lines = []
  for over, title in (((sweep_table.TUNED,), f'**Tuned {sweep_table.TUNED} per kind** ('
                       f"{sweep_table.TUNED} alone, at the grid's other settings"),
                      (None, '**Tuned configurations per kind** (over every swept field')):
    found = _tuned_rows(page, over)
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
      lines.append(_cells([
          row['kind'], rank, _config(row, fields), f'{_tried(row)}: {row["tried"]}',
          _ppl(row['best_valid_ppl_mean']), _best_step(row), _mean_sd(row),
          '' if is_reference else page.versus(row, reference),
          '' if is_reference or not page.frequent else page.versus(row, reference,
                                                                    page.frequent)]))
      if row['at_edge']:
        edges.append(f'{_input(row)} ({row["edges"].replace(",", ", ")})')
    if edges:
      lines += ['', '- The chosen value is the lowest or highest tried for: '
                + '; '.join(edges) + '. A wider range may do better there.']
    lines.append('')
    if over is not None and (page.folder.root / sweep_report.TUNING_PNG_FILE).exists():
      lines += [f'![best valid perplexity against the learning rate]'
                f'({sweep_report.TUNING_PNG_FILE})', '']
  return lines


def _tried(row: pd.Series) -> str:
  """'4', or '5 of 8' where the configurations tried are no full grid of their values."""
  return str(row['configs']) + ('' if row['grid'] == row['configs'] else f' of {row["grid"]}')


def _best_step(row: pd.Series) -> str:
  """'1750 of 3000', '3000 of 3000 (the last: still improving)'."""
  steps = '' if math.isnan(_steps(row)) else f' of {int(_steps(row))}'
  return f'{row["best_step"]}{steps}' + (' (the last: still improving)' if row['best_at_last']
                                         else '')


def _by_steps(page: _Page) -> tuple[list, pd.DataFrame] | None:
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


def _longer(page: _Page) -> list[str]:
  """The gap to the reference after more steps (a swept train.num_steps), per kind and rank:
  the table, whether the gap moved (the pooled test of the difference of differences over
  the four means) and which of the longest runs were still improving."""
  by_steps = _by_steps(page)
  if by_steps is None:
    return []
  steps, groups = by_steps
  name = page.folder.reference
  lines = [f'**Longer training** (train.num_steps {" against ".join(map(str, steps))}, '
           f'everything else equal; test perplexity and the gap to {name} at the same steps):',
           '', '| kind | rank | ' + ' | '.join(f'{n} steps' for n in steps) + ' |',
           '|---|---:|' + '---:|' * len(steps)]
  reference_at = {n: page.pick(groups[groups['num_steps'] == n], name) for n in steps}
  lines.append(f'| {name} | | ' + ' | '.join(_mean_sd(reference_at[n]) for n in steps) + ' |')
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
      cells.append(f'{_mean_sd(point.iloc[0])} ({page.versus(point.iloc[0], base)})')
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
      verdict = (f'{_p(test)}' if test.real else f'within seed noise, {_p(test)}'
                 ) if test.tested else 'untested for seed noise'
      moves.append(f'{_input(first)} {before:+.1f} → {after:+.1f} ({after - before:+.1f}, '
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


def _bands(page: _Page) -> list[str]:
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


def _improving(page: _Page) -> list[str]:
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


def _machine(page: _Page) -> list[str]:
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
  """The full findings of the results folder `sweep_dir`: its README.md (FINDINGS_FILE)."""
  folder = Folder.load(sweep_dir)
  page = _Page(folder)
  root, name = folder.root.as_posix(), folder.reference
  body = [
      *_summary_table(page), '', *_anchors(page),
      '![perplexity against rank](ppl_vs_rank.png)',
      '![perplexity against vocabulary parameters](ppl_vs_vocab_params.png)',
      '![perplexity per frequency band](band_ppl_vs_vocab_params.png)',
      '', f'**How close each factorization comes to {name}** (tied head, test perplexity '
      f'{_mean_sd(page.reference)} for {name}):', '', *_thresholds(page), *_noise(page), '',
      *_where(page),
      f'**Post-hoc SVD of the trained {name} table against training factorized from '
      'scratch**, at equal parameters (same rank):', '', *_posthoc(page), '',
      '**Tied against untied output heads** (the softmax bottleneck: an untied head keeps a '
      'full-rank D×V output layer whatever the input rank):', '', *_heads(page), '',
      *_split(page), *_head_map(page), *_tuned(page), *_longer(page), *_bands(page), '',
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
      'that have several (see Seed noise below). Rows trained for different numbers of steps '
      'are not compared (the text says "not step-matched"). The p-values here are per '
      f'comparison, unadjusted: this page makes {len(page.compared)} tests, so about '
      f'{len(page.compared) / 20:.0f} could pass at 5% by chance alone where nothing differs; the '
      "README headline's comparisons are one family, Holm-adjusted.", '']
  return '\n'.join([*intro, *body]) + '\n'


# --- the README headline -------------------------------------------------------------------

def _budget_points(page: _Page, groups: pd.DataFrame) -> list[pd.Series]:
  """Per factorized kind, its tied point nearest the budget (a fraction of the reference's
  vocabulary parameters)."""
  budget = page.folder.budget * page.reference['vocab_params']
  rows = []
  for kind in page.factorized_kinds(groups):
    points = groups[(groups['kind'] == kind) & (groups['head'] == 'tied')
                    & (groups['method'] == sweep_table.TRAINED)]
    if not points.empty:
      rows.append(points.loc[(points['vocab_params'].astype(float) - budget).abs().idxmin()])
  return rows


def _headline_tests(page: _Page, pairs: list[tuple[pd.Series, pd.Series]]
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


def _versus_adjusted(page: _Page, row: pd.Series, base: pd.Series, metric: str,
                     tests: dict, index: int) -> str:
  if (index, metric) not in tests:
    return page.versus(row, base, metric) if metric else '-'
  return gap_text(row[f'{metric}_mean'] / base[f'{metric}_mean'] - 1, tests[(index, metric)])


def _headline_reading(page: _Page, pairs: list[tuple[pd.Series, pd.Series]], tests: dict,
                      offset: int, where: str) -> list[str]:
  """The bullets for a set of (point, reference) pairs: the frequent-type verdicts first,
  then each all-token gap, its test and where it comes from."""
  name, bullets = page.folder.reference, []
  if page.frequent:
    verdicts: dict[str, list[str]] = {'higher': [], 'lower': [], 'within': []}
    for index, (row, base) in enumerate(pairs, offset):
      test = tests.get((index, page.frequent))
      if test is not None:
        relative = row[f'{page.frequent}_mean'] / base[f'{page.frequent}_mean'] - 1
        verdict = 'within' if not test.real else 'higher' if relative > 0 else 'lower'
        verdicts[verdict].append(f'{_point(row)} {gap_text(relative, test)}')
    if len(verdicts['higher']) == len(pairs) > 1:
      bullets.append(f'**{where}, every kind has a higher perplexity than {name} on the '
                     'frequent types**, beyond seed noise: ' + '; '.join(verdicts['higher'])
                     + '.')
    else:
      parts = [f'{label} for {"; ".join(entries)}' for label, entries in (
          (f'higher perplexity than {name} beyond seed noise', verdicts['higher']),
          (f'lower perplexity than {name} beyond seed noise', verdicts['lower']),
          (f'within seed noise of {name}', verdicts['within'])) if entries]
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
      bullets.append(f'{_point(row)}: {verdict} all-token perplexity than {name}, '
                     f'{gap_text(relative, test)}{nats}.{origin}')
    else:
      bullets.append(f'{_point(row)}: all-token perplexity {gap_text(relative, test)} against '
                     f'{name}{nats}.{origin}')
  return bullets


def render_headline(sweep_dir: str | pathlib.Path) -> str:
  """The README's headline block for `sweep_dir` (between its folder's markers): each kind's
  point nearest the budget (tied head, the grid's settings) against the reference on all
  tokens and on the frequent types, where each gap comes from, and the same at each kind's
  tuned configuration; one Holm-adjusted family of tests."""
  folder = Folder.load(sweep_dir)
  page = _Page(folder)
  root, name, reference = folder.root.as_posix(), folder.reference, page.reference
  grid = [(row, reference) for row in _budget_points(page, page.groups)]
  found = _tuned_rows(page, None)
  tuned_pairs: list[tuple[pd.Series, pd.Series]] = []
  if found is not None:
    chosen, tuned_reference, fields = found
    by_point = {(_point(row)): row for _, row in chosen.iterrows()}
    tuned_pairs = [(by_point[_point(row)], tuned_reference) for row, _ in grid
                   if _point(row) in by_point]
  pairs = grid + tuned_pairs
  tests = _headline_tests(page, pairs)
  settings = ', '.join(f'{c} {page.base[c].iloc[0]:g}' if sweep_table.is_number(
      page.base[c].iloc[0]) else f'{c} {page.base[c].iloc[0]}'
      for c in sweep_table.swept_columns(page.base))
  budget = folder.budget * reference['vocab_params']
  lines = [folder.begin, '',
           f'![test perplexity against vocabulary parameters]({root}/ppl_vs_vocab_params.png)',
           '', f'Each kind at its point nearest {folder.budget:.0%} of {name}\'s vocabulary '
           f'parameters ({int(budget):,}), tied head, the grid\'s settings'
           + (f' ({settings})' if settings else '') + f', against {name}. "Frequent types": '
           f'{page.frequent_text() or "none"}.', '',
           *[f'- {b}' for b in _headline_reading(page, grid, tests, 0, 'At this budget')], '',
           'A difference is called real when the pooled t-test over seeds gives p < 0.05 after '
           f'Holm\'s adjustment over the {len(tests)} comparisons with {name} in this block; '
           'otherwise it is "within seed noise". Perplexity: mean ± sd over seeds.', '']
  header = ['kind', 'rank', 'vocab params', f'of {name}', 'seeds', 'test ppl', f'vs {name}',
            'frequent-type ppl', f'vs {name}']
  lines += [_cells(header), '|---|---:|---:|---:|---:|---:|---|---:|---|',
            _cells([name, '', f'{int(reference["vocab_params"]):,}', '100%',
                    reference['seeds'], _mean_sd(reference), '', _mean_sd(reference,
                                                                         page.frequent), ''])]
  for index, (row, base) in enumerate(grid):
    lines.append(_cells([
        row['kind'], '' if pd.isna(row['rank']) else int(row['rank']),
        f'{int(row["vocab_params"]):,}', f'{row["vocab_params"] / reference["vocab_params"]:.0%}',
        row['seeds'], _mean_sd(row), _versus_adjusted(page, row, base, TESTED, tests, index),
        _mean_sd(row, page.frequent),
        _versus_adjusted(page, row, base, page.frequent, tests, index)]))
  lines += ['', *_headline_parts(page, pairs)]
  if tuned_pairs:
    lines += [f'At each kind\'s tuned configuration (the combination of swept fields of '
              'lowest best-valid perplexity among those tried; the test split chooses '
              f'nothing), against {name} at its own:', '',
              *[f'- {b}' for b in _headline_reading(page, tuned_pairs, tests, len(grid),
                                                    'At the tuned configurations')], '',
              _cells(['kind', 'rank', 'configuration', 'configurations tried',
                      'best valid at step', 'test ppl', f'vs {name}', 'frequent-type ppl',
                      f'vs {name}']), '|---|---:|---|---|---|---:|---|---:|---|',
              _cells([name, '', _config(tuned_reference, fields), _tried(tuned_reference),
                      _best_step(tuned_reference), _mean_sd(tuned_reference), '',
                      _mean_sd(tuned_reference, page.frequent), ''])]
    for index, (row, base) in enumerate(tuned_pairs, len(grid)):
      lines.append(_cells([
          row['kind'], '' if pd.isna(row['rank']) else int(row['rank']), _config(row, fields),
          _tried(row), _best_step(row), _mean_sd(row),
          _versus_adjusted(page, row, base, TESTED, tests, index), _mean_sd(row, page.frequent),
          _versus_adjusted(page, row, base, page.frequent, tests, index)]))
    edges = [f'{_input(row)} ({row["edges"].replace(",", ", ")})' for row, _ in tuned_pairs
             if row['at_edge']]
    if tuned_reference['at_edge']:
      edges.insert(0, f'{name} ({tuned_reference["edges"].replace(",", ", ")})')
    if edges:
      lines += ['', 'At the edge of the values tried (a wider range may do better): '
                + '; '.join(edges) + '.']
    lines.append('')
  lines += [f'The full findings, every point and the commands: '
            f'[{root}/{FINDINGS_FILE}]({root}/{FINDINGS_FILE}).', '', folder.end]
  return '\n'.join(lines) + '\n'


def _headline_parts(page: _Page, pairs: list[tuple[pd.Series, pd.Series]]) -> list[str]:
  """The headline's table of where each gap comes from (nats per test token by group)."""
  rows = []
  for row, base in pairs:
    found = page.decompose(row, base)
    if found is not None and not page.step_mismatch(row, base):
      label = _point(row) + ('' if base is page.reference else ', tuned')
      rows.append((label, found))
  if not rows:
    return []
  prefix, shares = rows[0][1].prefix, rows[0][1].shares
  rows = [(label, found) for label, found in rows if found.prefix == prefix]
  grouping = 'band' if prefix == sweep_table.BAND_PREFIX else 'class'
  return [f'Where each gap to {page.folder.reference} comes from: nats per test token, a '
          f"group's (loss - {page.folder.reference}'s loss) × its share of test tokens, "
          'summing to the all-token gap:', '',
          _cells(['point', 'all tokens', *[f'{grouping} `{n}` ({s:.1%})'
                                          for n, s in shares.items()]]),
          '|---|---:|' + '---:|' * len(shares),
          *[_cells([label, f'{found.gap:+.3f}', *[f'{found.parts[n]:+.3f}' for n in shares]])
            for label, found in rows], '']


def replace_section(readme: str, section: str, folder: Folder) -> str:
  """`readme` with its text from the folder's begin marker to its end marker replaced by
  `section`."""
  start, end = readme.find(folder.begin), readme.find(folder.end)
  if start < 0 or end < start:
    raise ValueError(f'README has no results section between the markers {folder.begin!r} and '
                     f'{folder.end!r}; add them where the section belongs.')
  return readme[:start] + section.rstrip('\n') + readme[end + len(folder.end):]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('sweep_dir', help='a results folder, e.g. results/brown')
  parser.add_argument('--readme', help='also rewrite the folder\'s headline block between its '
                      'markers in this file')
  args = parser.parse_args()
  findings = pathlib.Path(args.sweep_dir) / FINDINGS_FILE
  findings.write_text(render(args.sweep_dir))
  print(f'{findings}: rewritten')
  if args.readme:
    path = pathlib.Path(args.readme)
    section = render_headline(args.sweep_dir)
    path.write_text(replace_section(path.read_text(), section, Folder.load(args.sweep_dir)))
    print(f'{path}: headline rewritten from {args.sweep_dir}')


if __name__ == '__main__':
  main()
