"""Figures of a sweep and of trained embeddings, drawn from what readers.py,
embeddings/spectrum.py and interpret.py return.

Every function returns a matplotlib Figure, closed in pyplot so that a notebook shows it
once (as the cell's value). Sweep tables are readers.load_sweep_table's: one curve per
`series` (kind, `_untied` for untied heads), rank empty for kinds without one (dense),
post-hoc rows of kind `posthoc_svd*`. Colours follow embeddings.KINDS (a new kind gets the
next one), shades of green for post-hoc compression.

A sweep's report (report.py) draws one question a figure: plot_headline (test perplexity
against vocabulary parameters, one line per kind at the grid's settings, dense as a band),
then what it leaves out, each on its own: plot_band_ppl (per frequency band), plot_head_map
(untied heads), plot_posthoc (post-hoc SVD against training from scratch), plot_tuning
(the learning-rate curves) and plot_bytes_front (test perplexity against the bytes the
vocabulary tables take, every precision: the memory-perplexity front). plot_ppl draws every
series at once: the notebooks' overview.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jax.typing import ArrayLike
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.container import Container
from matplotlib.figure import Figure
from matplotlib.ticker import (
  FuncFormatter,
  LogLocator,
  MaxNLocator,
  NullFormatter,
  ScalarFormatter,
)
from matplotlib.transforms import Bbox

from factorized import embeddings
from factorized.analysis import readers
from factorized.analysis import table as sweep_table
from factorized.embeddings import spectrum

_PALETTE = (('black', 'Greys'), ('tab:orange', 'Oranges'), ('tab:blue', 'Blues'),
            ('tab:red', 'Reds'), ('tab:purple', 'Purples'), ('tab:brown', 'copper_r'),
            ('tab:pink', 'RdPu'), ('tab:cyan', 'GnBu'))
_POSTHOC = {sweep_table.POSTHOC_METHOD: ('tab:green', 'Greens'),
            f'{sweep_table.POSTHOC_METHOD}_freq': ('tab:olive', 'YlGn'),
            f'{sweep_table.POSTHOC_METHOD}_bands': ('seagreen', 'BuGn'),
            f'{sweep_table.POSTHOC_METHOD}_freq_bands': ('darkolivegreen', 'YlGn')}
KIND_STYLES = {**{kind: _PALETTE[i % len(_PALETTE)] for i, kind in enumerate(embeddings.KINDS)},
               **_POSTHOC}
KIND_COLORS = {kind: color for kind, (color, _) in KIND_STYLES.items()}
AXES = {'rank': 'rank', 'vocab_params': 'vocab params', 'vocab_bytes': 'vocab bytes'}
# A point's marker on the bytes front: how its tables are stored (table.precision).
PRECISION_MARKERS = {'float32': 'o', 'codes': 'D', 'QAT': '^', 'post-training': 's'}
REFERENCE = 'dense'  # drawn as a band (mean ± sd): the perplexity the factorizations chase
SCRATCH = 'svd'  # what post-hoc SVD is compared with: the same factorization, trained
# The y axis of a perplexity panel stops at this multiple of dense's: a worse point is marked
# on the top edge with its value rather than squashing every other point.
Y_CLIP = 2.5
# The PNGs' resolution, and the figures' own: _place_labels measures text at the dpi it is saved at.
DPI = 120
# Where a point's label may go (points from the point), tried in turn until one is free.
# (x, y, horizontal alignment): right of it, left of it, above, below, further below.
_LABEL_OFFSETS = ((4, 3, 'left'), (4, -11, 'left'), (-4, 3, 'right'), (-4, -11, 'right'),
                  (0, 6, 'center'), (0, -17, 'center'), (4, -22, 'left'), (-4, -22, 'right'),
                  (4, -33, 'left'), (-4, -33, 'right'))


def _figure(panels: int = 1, width: float = 5.0, height: float = 3.6,
            **options) -> tuple[Figure, list]:
  """A constrained-layout figure of `panels` axes side by side; `options` go to subplots."""
  fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), layout='constrained',
                           squeeze=False, dpi=DPI, **options)
  plt.close(fig)
  return fig, list(axes[0])


def _kind(series: str) -> str:
  """'svd_untied' -> 'svd', 'posthoc_svd_ft300' -> 'posthoc_svd', 'dense_ft30' -> 'dense'."""
  for kind in sorted(KIND_STYLES, key=len, reverse=True):
    if series.startswith(kind):
      return kind
  return series


def _shades(kind: str, count: int) -> np.ndarray:
  """`count` colours of the kind's colour map, light to dark (one: dark)."""
  where = np.linspace(0.4, 1.0, count) if count > 1 else [0.9]
  return plt.get_cmap(KIND_STYLES.get(kind, (None, 'viridis'))[1])(where)


def _style(series: str) -> dict:
  return {'color': KIND_COLORS.get(_kind(series)),
          'ls': '--' if 'untied' in series or 'posthoc' in series else '-',
          'marker': 's' if 'posthoc' in series else '^' if '_head' in series else 'o'}


def rank_label() -> str:
  """'rank (E for albert, R for svd, ...)': what each kind's rank is."""
  return 'rank (' + ', '.join(f'{embeddings.kind(name).rank_label} for {name}'
                              for name in embeddings.KINDS if embeddings.ranked(name)) + ')'


def _log_axis(ax, x: str, values) -> None:
  values = sorted({int(v) for v in values})
  if x == 'rank':
    ax.set_xscale('log', base=2)
    if values:
      ax.set_xticks(values)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
  else:  # parameter counts: 100k, 200k, 500k, 1M, ... rather than powers of ten alone
    ax.set_xscale('log')
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda value, _: f'{value / 1e6:g}M' if value >= 1e6 else f'{value / 1e3:g}k'))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _error_bars(ax, rows: pd.DataFrame, x: str, column: str, **style) -> None:
  """Mean over seeds with a bar of one standard deviation where there are several seeds."""
  std = rows[f'{column}_std'].astype(float)  # NaN (one seed): no bar, no cap
  ax.errorbar(rows[x].astype(float), rows[f'{column}_mean'].astype(float),
              yerr=std if std.notna().any() else None, capsize=3, **style)


def _legend(fig: Figure, axes: Sequence, loc: str = 'outside lower center') -> None:
  """One legend for every panel, outside the data; a label met in several panels once."""
  entries: dict[str, object] = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
      entries.setdefault(label, handle)
  # The curves (error-bar containers, which matplotlib lists last) first, then the references.
  labels = sorted(entries, key=lambda label: not isinstance(entries[label], Container))
  if labels:
    entry = 0.6 + 0.06 * max(map(len, labels))  # inches: the handle, then 7-point text
    columns = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    fig.legend([entries[label] for label in labels], labels, loc=loc, fontsize=7,
               ncols=columns if 'center' in loc else 1, frameon=False)


def _line_points(ax) -> np.ndarray:
  """Display points a few pixels apart along every curve of `ax`, which a label must not
  cover. Lines across the whole axes (dense's reference) are left out: a point next to dense
  has no other room for its label, and a thin straight line under text stays readable."""
  points = [np.empty((0, 2))]
  for line in ax.get_lines():
    if line.get_transform() is not ax.transData:  # axhline: x in axes coordinates
      continue
    xy = line.get_transform().transform(np.asarray(line.get_xydata(), float).reshape(-1, 2))
    xy = xy[np.isfinite(xy).all(axis=1)]
    if line.get_linestyle() in ('None', 'none', '', ' '):  # markers alone: no segments
      points.append(xy)
      continue
    for start, end in zip(xy[:-1], xy[1:], strict=True):
      points.append(np.linspace(start, end, int(np.hypot(*(end - start)) // 3) + 2))
  return np.concatenate(points)


def _place_labels(fig: Figure, panels: Sequence[tuple]) -> None:
  """Writes each drawn point's `text` beside it, at the first of _LABEL_OFFSETS where it stays
  inside its axes and covers no line, no marker and no label placed before; a text that fits
  nowhere is left out, never drawn over another. `panels`: (axes, drawn frame with x, y,
  color, text)."""
  fig.draw_without_rendering()  # lays the figure out: display coordinates are final now
  for ax, drawn in panels:
    shown = drawn[drawn['x'].notna()]
    if 'clipped' in shown:  # a value off the axis is worth more than a rank: placed first
      shown = shown.sort_values('clipped', ascending=False, kind='stable')
    where = ax.transData.transform(shown[['x', 'y']].to_numpy(float).reshape(-1, 2))
    taken = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in where]  # the markers
    lines = _line_points(ax)
    frame = ax.get_window_extent()
    for _, row in shown.iterrows():
      if not isinstance(row['text'], str):
        continue
      for dx, dy, align in _LABEL_OFFSETS:
        text = ax.annotate(row['text'], (row['x'], row['y']), xytext=(dx, dy), fontsize=7,
                           textcoords='offset points', color=row['color'], ha=align,
                           annotation_clip=False)
        text.set_in_layout(False)  # labels must not move the axes they were placed in
        box = text.get_window_extent().padded(2)  # apart, never touching
        inside = (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
                  and box.y1 <= frame.y1)
        # A clipped value is the only place its number shows: it may cross a line.
        crossed = not row.get('clipped', False) and (
            (lines[:, 0] > box.x0) & (lines[:, 0] < box.x1) & (lines[:, 1] > box.y0)
            & (lines[:, 1] < box.y1)).any()
        if inside and not crossed and not any(box.overlaps(other) for other in taken):
          taken.append(box)
          break
        text.remove()


def _curves(ax, groups: pd.DataFrame, x: str, column: str) -> pd.DataFrame:
  """One curve per series against `x` (rank or vocab_params), mean over seeds with std
  bars. Against rank, series without one (dense, dense_ft<N>) are horizontal lines; against
  vocab params they are points, the Pareto front drawn. Returns the points whose rank
  _place_labels writes (against vocab params)."""
  groups = groups[np.isfinite(groups[f'{column}_mean'].astype(float))]
  placed = groups[groups[x].notna()]
  for series, rows in placed.groupby('series', sort=False):
    _error_bars(ax, rows.sort_values(x), x, column, label=series, zorder=3, **_style(series))
  labels = []
  if x == 'rank':
    for _, row in groups[groups['rank'].isna()].iterrows():
      ax.axhline(row[f'{column}_mean'], color=KIND_COLORS.get(_kind(row['series'])), lw=1,
                 ls=':' if row['kind'] in embeddings.KINDS else '-.', label=row['series'])
  else:
    labels = [{'x': row[x], 'y': row[f'{column}_mean'], 'color': 'dimgray',
               'text': None if pd.isna(row['rank']) else str(row['rank'])}
              for _, row in placed.iterrows()]
    front = sweep_table.pareto_front(placed, x, f'{column}_mean')
    ax.step(front[x], front[f'{column}_mean'], where='post', color='gray', lw=1,
            label='Pareto front', zorder=2)
  if not placed.empty:
    _log_axis(ax, x, placed[x])
  return pd.DataFrame(labels, columns=['x', 'y', 'color', 'text'])


def plot_ppl(table: pd.DataFrame, x: str = 'vocab_params',
             splits: Sequence[str] = ('valid', 'test')) -> Figure:
  """Every series (trained, untied and post-hoc) against `x`, one panel per split: mean over
  seeds with one-standard-deviation bars, the legend to the right of the panels. x =
  'vocab_params' (every parameter the embedding choice adds, model/costs.py) puts every kind on
  one axis, whatever its rank means; x = 'rank' draws kinds without a rank as horizontal
  lines. The reports draw plot_headline; this is the notebook's view of everything."""
  groups = sweep_table.aggregate(table)
  fig, axes = _figure(len(splits), width=5.0 if x == 'rank' else 5.5)
  panels = []
  for ax, split in zip(axes, splits, strict=True):
    panels.append((ax, _curves(ax, groups, x, f'{split}_ppl')))
    ax.set(xlabel=rank_label() if x == 'rank' else AXES[x], ylabel=f'{split} perplexity',
           title=f'{split} perplexity against {AXES[x]}')
    ax.grid(alpha=0.3)
  _legend(fig, axes, loc='outside right upper')
  _place_labels(fig, panels)
  return fig


def _trained(table: pd.DataFrame) -> pd.DataFrame:
  """The rows of runs trained from scratch (a post-training quantization row keeps its
  parent's kind)."""
  return table[table['kind'].isin(embeddings.KINDS) & (table['method'] == sweep_table.TRAINED)]


def headline_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The aggregate rows a headline panel draws: tied heads of the trained kinds whose tables
  are parameters (embeddings.KINDS of float32 storage; dpq, sized in bytes, is on the bytes
  front) at the grid's own settings (table.base_rows), mean and sd over seeds."""
  groups = sweep_table.aggregate(sweep_table.base_rows(table))
  kinds = [k for k in embeddings.KINDS if embeddings.kind(k).storage == 'float32']
  return groups[groups['kind'].isin(kinds) & (groups['head'] == 'tied')
                & (groups['method'] == sweep_table.TRAINED)]


def tuned_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The tied rows of table.tuned: each kind at its tuned TUNED (train.lr), where tuned."""
  chosen = sweep_table.tuned(table)
  return chosen[chosen['head'] == 'tied']


def _band(ax, row: pd.Series, column: str) -> None:
  """REFERENCE's aggregate `row` across the axes: its mean as a line and, over several
  seeds, mean ± sd as a band."""
  value, spread = float(row[f'{column}_mean']), float(row[f'{column}_std'])
  color = KIND_COLORS[REFERENCE]
  several = math.isfinite(spread)
  ax.axhline(value, color=color, lw=1.2, zorder=2, label=REFERENCE + (
      f': mean ± sd over {row["seeds"]} seeds (band)' if several else ''))
  if several:
    ax.axhspan(value - spread, value + spread, color=color, alpha=0.12, lw=0, zorder=1)


def _kind_lines(ax, groups: pd.DataFrame, x: str, column: str,
                tuned: pd.DataFrame | None = None) -> pd.DataFrame:
  """REFERENCE (dense) as a band of mean ± sd, every other kind as one line against `x`
  (mean over seeds, sd bars) and, from `tuned`, each kind at its tuned rate hollow, joined
  by a dotted segment to its line's point at that rank (dense's: a dashed line). Returns
  what was drawn, one row per point or band: x (NaN for a band), y (the mean), low, high,
  color, text (the rank, for _place_labels against vocab params) and reference."""
  mean, std = f'{column}_mean', f'{column}_std'
  groups = groups[np.isfinite(groups[mean].astype(float))]
  drawn = []

  def add(at, value, spread, color, text=None, reference=False):
    spread = spread if math.isfinite(spread) else 0.0
    drawn.append({'x': at, 'y': value, 'low': value - spread, 'high': value + spread,
                  'color': color, 'text': text, 'reference': reference})

  for _, row in groups[groups['kind'] == REFERENCE].iterrows():
    _band(ax, row, column)
    add(np.nan, float(row[mean]), float(row[std]), KIND_COLORS[REFERENCE], reference=True)
  for kind, rows in groups[groups['kind'] != REFERENCE].groupby('kind', sort=False):
    rows = rows.dropna(subset=[x]).sort_values(x)
    label = f'{kind} ({embeddings.kind(kind).rank_label})' if embeddings.ranked(kind) else kind
    _error_bars(ax, rows, x, column, color=KIND_COLORS.get(kind), marker='o', ms=4,
                label=label, zorder=3)
    for _, row in rows.iterrows():
      text = None if x == 'rank' or pd.isna(row['rank']) else str(int(row['rank']))
      add(float(row[x]), float(row[mean]), float(row[std]), KIND_COLORS.get(kind), text)
  if tuned is None or tuned.empty or mean not in tuned.columns:
    return pd.DataFrame(drawn, columns=['x', 'y', 'low', 'high', 'color', 'text', 'reference'])
  for _, row in tuned.iterrows():
    kind, value = row['kind'], float(row[mean])
    color = KIND_COLORS.get(kind)
    if kind == REFERENCE:
      ax.axhline(value, color=color, lw=1, ls='--', zorder=2,
                 label=f'{REFERENCE} at its tuned {sweep_table.TUNED}')
      add(np.nan, value, np.nan, color)
      continue
    at = float(row[x])
    ax.plot([at], [value], 'o', mfc='white', mec=color, mew=1.5, ms=6, zorder=4)
    grid = groups[(groups['kind'] == kind) & (groups[x] == at)]
    if not grid.empty:
      ax.plot([at, at], [float(grid[mean].iloc[0]), value], color=color, ls=':', lw=1, zorder=2)
    add(at, value, np.nan, color)
  ax.plot([], [], 'o', mfc='white', mec='gray', mew=1.5, ls='none',
          label=f'hollow: the kind at its tuned {sweep_table.TUNED}')
  return pd.DataFrame(drawn, columns=['x', 'y', 'low', 'high', 'color', 'text', 'reference'])


def _y_range(drawn: pd.DataFrame) -> tuple[float, float]:
  """(bottom, top) of a perplexity axis holding every drawn point and bar, its top at most
  Y_CLIP x the reference's perplexity (dense; else the lowest point) so that one outlier
  cannot squash the rest."""
  reference = drawn.loc[drawn['reference'].astype(bool), 'y']
  reference = reference.iloc[0] if not reference.empty else drawn['y'].min()
  low, high = drawn['low'].min(), min(drawn['high'].max(), Y_CLIP * reference)
  pad = 0.05 * (high - low) if high > low else 0.05 * abs(high) or 1.0
  return low - pad, high + pad


def _clipped(ax, drawn: pd.DataFrame, top: float) -> pd.DataFrame:
  """Marks each point above `top` with a triangle on the axes' top edge; returns `drawn`
  with those points moved there and their value added to their label (_place_labels)."""
  above = drawn['x'].notna() & (drawn['y'] > top)
  drawn = drawn.copy()
  for index, row in drawn[above].iterrows():
    ax.plot([row['x']], [top], marker='^', color=row['color'], ls='none', clip_on=False,
            zorder=5)
    rank = f'{row["text"]}: ' if isinstance(row['text'], str) else ''
    drawn.loc[index, 'text'] = f'{rank}{row["y"]:.0f}'
  drawn.loc[above, 'y'] = top
  drawn['clipped'] = above
  return drawn


def plot_headline(tables: pd.DataFrame | Mapping[str, pd.DataFrame],
                  x: str = 'vocab_params') -> Figure:
  """Test perplexity against `x` (vocab_params on a log axis, or rank): one line per kind
  (tied head, the grid's own settings, mean ± sd over seeds, points labelled with their
  rank against vocab params), dense as a band of mean ± sd, each kind at its tuned rate
  hollow where one was tuned; the y axis stops at Y_CLIP x dense (a point above is marked
  on the top edge with its value), the legend below the panels. `tables`: one per-run table,
  or {protocol: table} drawn side by side with a shared y axis."""
  named = {'': tables} if isinstance(tables, pd.DataFrame) else dict(tables)
  settings = {sweep_table.grid_settings(table) for table in named.values()} - {''}
  return _kind_panels(named, x, headline_rows, tuned_rows,
                      f'test perplexity against {AXES[x]}: tied heads'
                      + (f' at the grid\'s {settings.pop()}' if len(settings) == 1 else ''))


def _kind_panels(named: Mapping[str, pd.DataFrame], x: str, rows_of, tuned_of, title: str,
                 sharey: bool = True) -> Figure:
  """One _kind_lines panel per table of `named` (its title the key), drawing rows_of(table)
  and, where tuned_of, the hollow tuned points; a y axis (shared, or each panel's own)
  clipped at Y_CLIP x dense's, the legend below the panels."""
  fig, axes = _figure(len(named), width=5.0 if len(named) > 1 else 6.4, height=4.4,
                      sharey=sharey)
  panels = []
  for ax, (name, table) in zip(axes, named.items(), strict=True):
    drawn = _kind_lines(ax, rows_of(table), x, 'test_ppl',
                        tuned_of(table) if tuned_of else None)
    if drawn['x'].notna().any():
      _log_axis(ax, x, drawn['x'].dropna())
      ax.margins(x=0.08)  # room for the labels of the outermost points
    ax.set(xlabel=rank_label() if x == 'rank' else AXES[x], title=name)
    ax.grid(alpha=0.3)
    panels.append((ax, drawn))
  axes[0].set_ylabel('test perplexity')
  groups = [panels] if sharey else [[panel] for panel in panels]
  clipped = []
  for group in groups:
    every = pd.concat([drawn for _, drawn in group])
    if every.empty:
      clipped += group
      continue
    bottom, top = _y_range(every)
    group[0][0].set_ylim(bottom, top)  # shared by the group's panels
    clipped += [(ax, _clipped(ax, drawn, top)) for ax, drawn in group]
  panels = clipped
  fig.suptitle(title, fontsize=10)
  _legend(fig, axes)
  _place_labels(fig, panels)
  return fig


def protocol_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The rows plot_protocols draws from one protocol's per-run table: headline_rows, each
  point (kind, rank) replaced by its tuned configuration over every swept field where it
  was tried in several (table.tuned(over=None): by valid perplexity)."""
  rows = headline_rows(table)
  chosen = sweep_table.tuned(table, over=None)
  chosen = chosen[chosen['head'] == 'tied'] if not chosen.empty else chosen
  keep = []
  for _, row in rows.iterrows():
    found = chosen[sweep_table.matching(chosen, row, ['kind', 'rank'])] if len(chosen) else chosen
    keep.append(found.iloc[0] if len(found) else row)
  return pd.DataFrame(keep, columns=rows.columns) if keep else rows


def plot_protocols(tables: Mapping[str, pd.DataFrame], x: str = 'vocab_params') -> Figure:
  """Test perplexity against `x`, one panel per protocol ({panel title: per-run table}), each
  with its own y axis (the protocols' perplexities differ in scale): one line per kind, each
  point at its tuned configuration (protocol_rows; mean ± sd bars over seeds), dense at its
  own as a band; each y axis stops at Y_CLIP x its dense's, the legend below the panels."""
  return _kind_panels(dict(tables), x, protocol_rows, None,
                      f'test perplexity against {AXES[x]}: tied heads, each point at its tuned '
                      'configuration (by valid perplexity)', sharey=False)


def plot_band_ppl(table: pd.DataFrame, x: str = 'vocab_params') -> Figure:
  """Test perplexity of each frequency band of the target (one panel per band) against `x`,
  the headline's lines (headline_rows: tied heads, the grid's settings, dense as a band):
  which words a small embedding costs. Each panel's y axis stops at Y_CLIP x dense's."""
  bands = [c for c in sweep_table.metric_columns(table) if c.startswith(sweep_table.BAND_PREFIX)]
  groups = headline_rows(table)
  fig, axes = _figure(max(1, len(bands)), width=3.6, height=3.6)
  panels = []
  for ax, band in zip(axes, bands, strict=False):
    drawn = _kind_lines(ax, groups, x, band)
    if drawn['x'].notna().any():
      _log_axis(ax, x, drawn['x'].dropna())
      ax.margins(x=0.08)  # room for the labels of the outermost points
      bottom, top = _y_range(drawn)
      ax.set_ylim(bottom, top)
      drawn = _clipped(ax, drawn, top)
    ax.set(xlabel=AXES[x], ylabel='test perplexity',
           title=f'band {band.removeprefix(sweep_table.BAND_PREFIX)}')
    ax.grid(alpha=0.3)
    panels.append((ax, drawn))
  if not bands:
    axes[0].set_title('no band perplexities in these summaries')
  _legend(fig, axes)
  _place_labels(fig, panels)
  return fig


def posthoc_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The aggregate rows plot_posthoc draws (the grid's own settings): every post-hoc
  compression of the dense table (each method, fine-tuned or not), dense fine-tuned as
  long, and tied SCRATCH (svd) and REFERENCE (dense) as trained; none without a post-hoc
  row."""
  groups = sweep_table.aggregate(sweep_table.base_rows(table))
  trained = groups['method'] == sweep_table.TRAINED
  finetuned = groups['method'] == sweep_table.FINETUNED
  posthoc = ~trained & ~finetuned & (groups['method'] != sweep_table.POSTHOC_QUANT)
  if not posthoc.any():
    return groups.iloc[:0]
  scratch = trained & groups['kind'].isin([REFERENCE, SCRATCH]) & (groups['head'] == 'tied')
  return groups[posthoc | finetuned | scratch]


def plot_posthoc(table: pd.DataFrame, split: str = 'test') -> Figure:
  """`split` perplexity against rank: the trained dense table cut to rank R after training
  (each post-hoc method; fine-tuned: dashed) against SCRATCH (svd) trained at rank R, dense
  as a band and dense fine-tuned as long dashed. A log y axis: a cut at a low rank can cost
  several times dense's perplexity, and that is what the figure shows."""
  mean = f'{split}_ppl_mean'
  groups = posthoc_rows(table)
  groups = groups[np.isfinite(groups[mean].astype(float))]
  fig, (ax,) = _figure(1, width=6.4, height=4.4)
  ranked = groups[groups['rank'].notna()]
  for series, rows in ranked.groupby('kind', sort=False):
    method, steps = rows['method'].iloc[0], int(rows['finetune_steps'].iloc[0])
    trained = method == sweep_table.TRAINED
    label = f'{series} from scratch' if trained else (
        f'{series} (fine-tuned {steps} steps)' if steps else series)
    _error_bars(ax, rows.sort_values('rank'), 'rank', f'{split}_ppl', label=label, zorder=3,
                color=KIND_COLORS.get(SCRATCH if trained else method),
                ls='--' if steps else '-', marker='o' if trained else 's', ms=4)
  for _, row in groups[groups['rank'].isna()].iterrows():
    if row['method'] == sweep_table.TRAINED:
      _band(ax, row, f'{split}_ppl')
    else:  # the control: dense trained as many more steps as the post-hoc rows were tuned
      ax.axhline(float(row[mean]), color=KIND_COLORS[REFERENCE], lw=1, ls='--', zorder=2,
                 label=f'{row["kind"]} (fine-tuned as long)')
  if ranked.empty:
    ax.set_title('no post-hoc rows in these summaries')
  else:
    _log_axis(ax, 'rank', ranked['rank'])
    _log_y(ax)
    ax.set_title(f'post-hoc SVD of the trained {REFERENCE} table against {SCRATCH} from '
                 'scratch', fontsize=10)
  ax.set(xlabel='rank R (every line has the same vocab params at one R)',
         ylabel=f'{split} perplexity (log)')
  ax.grid(alpha=0.3)
  _legend(fig, [ax])
  return fig


def _log_y(ax) -> None:
  """A log perplexity axis written as plain numbers (100, 150, 200, ...; evenly spaced
  numbers where the data span less than a factor of 3, which those would leave unlabelled).
  Call it once the data are drawn."""
  ax.set_yscale('log')
  low, high = ax.get_ylim()
  ax.yaxis.set_major_locator(MaxNLocator(6) if high < 3 * low
                             else LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
  ax.yaxis.set_major_formatter(ScalarFormatter())
  ax.yaxis.set_minor_formatter(NullFormatter())


def plot_bytes_front(table: pd.DataFrame, split: str = 'test') -> Figure:
  """`split` perplexity against the bytes the vocabulary tables take (log x): every trained
  kind at every precision (table.bytes_rows: float32, QAT, post-training int8/int4), a colour
  per kind and a marker per precision (PRECISION_MARKERS), one point per row, the Pareto front
  across all of them as a step line, REFERENCE (dense) float32 as a band. A log y axis: int4
  after training can cost several times dense's perplexity."""
  fig, (ax,) = _figure(1, width=6.8, height=4.6)
  _bytes_panel(fig, [(ax, f'{split}_ppl')], sweep_table.bytes_rows(table),
               f'{split} perplexity against vocabulary bytes, every precision', split)
  return fig


def plot_band_bytes(table: pd.DataFrame) -> Figure:
  """plot_bytes_front's twin of plot_band_ppl: test perplexity of each frequency band of the
  target (one panel per band) against vocabulary bytes, every kind at every precision, each
  panel with its own Pareto front: which words a byte budget costs."""
  bands = [c for c in sweep_table.metric_columns(table) if c.startswith(sweep_table.BAND_PREFIX)]
  fig, axes = _figure(max(1, len(bands)), width=3.8, height=3.8)
  if not bands:
    axes[0].set_title('no band perplexities in these summaries')
    return fig
  _bytes_panel(fig, list(zip(axes, bands, strict=False)), sweep_table.bytes_rows(table),
               'band {}', 'test')
  return fig


def _bytes_panel(fig: Figure, panels: list[tuple[Axes, str]], groups: pd.DataFrame,
                 title: str, split: str) -> None:
  """Draws each (axis, metric column) of `panels` as plot_bytes_front draws its one: the
  aggregate rows `groups`, `title` formatted with the column's band name."""
  x, placed = 'vocab_bytes', []
  groups = groups.assign(precision=[sweep_table.precision(row) for _, row in groups.iterrows()],
                         head_text=[sweep_table.head_label(row) for _, row in groups.iterrows()])
  for ax, column in panels:
    rows_here = groups[np.isfinite(groups[f'{column}_mean'].astype(float))]
    for _, row in rows_here[(rows_here['kind'] == REFERENCE) & (rows_here['head'] == 'tied')
                            & (rows_here['precision'] == 'float32')].iterrows():
      _band(ax, row, column)
    labels = []
    for (kind, head, stored), rows in rows_here.groupby(['kind', 'head_text', 'precision'],
                                                        sort=False):
      color = KIND_COLORS.get(kind)
      name = ' '.join(part for part in (kind, '' if head == 'tied' else head, stored) if part)
      # A marker per method, filled for 8 bits and wider, hollow for fewer (int4).
      hollow = stored.startswith('int') and int(stored.split()[0][3:]) < 8
      _error_bars(ax, rows.sort_values(x), x, column, color=color, label=name, zorder=3, ms=5,
                  marker=PRECISION_MARKERS[stored.split()[-1]],
                  mfc='white' if hollow else color, ls='-' if stored == 'float32' else ':')
      labels += [{'x': row[x], 'y': row[f'{column}_mean'], 'color': color,
                  'text': None if pd.isna(row['rank']) else str(int(row['rank']))}
                 for _, row in rows.iterrows()]
    front = sweep_table.pareto_front(rows_here, x, f'{column}_mean')
    ax.step(front[x], front[f'{column}_mean'], where='post', color='gray', lw=1,
            label='Pareto front', zorder=2)
    if rows_here.empty:
      ax.set_title('no trained rows in these summaries')
    else:
      _log_axis(ax, x, rows_here[x])
      _log_y(ax)
      ax.margins(x=0.08)  # room for the labels of the outermost points
      ax.set_title(title.format(column.removeprefix(sweep_table.BAND_PREFIX)), fontsize=10)
    ax.set(xlabel=f'{AXES[x]} (log)', ylabel=f'{split} perplexity (log)')
    ax.grid(alpha=0.3)
    placed.append((ax, pd.DataFrame(labels, columns=['x', 'y', 'color', 'text'])))
  _legend(fig, [ax for ax, _ in panels])
  _place_labels(fig, placed)


def plot_tuning(table: pd.DataFrame, field: str = sweep_table.TUNED) -> Figure:
  """Best valid perplexity (mean over seeds, std bars) against a swept `field` (train.lr),
  one curve per kind, head and rank tried at several values; the tuned value circled."""
  groups = sweep_table.aggregate(_trained(table))
  chosen = sweep_table.tuned(table)
  fig, (ax,) = _figure(1, width=7.0, height=4.0)
  # A curve's points agree with its tuned row on everything but `field` (kind, head, rank
  # and any other swept field: a 3,000-step point is not on the 1,500-step curve).
  others = [c for c in sweep_table.swept_columns(groups) if c != field and c in chosen.columns]
  differ = [c for c in others if chosen[c].map(repr).nunique() > 1]  # named in the labels
  tried = set()
  for _, best in chosen.iterrows():
    rows = groups[sweep_table.matching(groups, best, [*sweep_table.GROUP, *others])]
    rows = rows.sort_values(field)
    tried |= set(rows[field].astype(float))
    label = best['series'] + ('' if pd.isna(best['rank']) else f' {int(best["rank"])}')
    label += ''.join(f', {c} {best[c]:g}' if isinstance(best[c], float) else f', {c} {best[c]}'
                     for c in differ)
    _error_bars(ax, rows, field, 'best_valid_ppl', label=label, **_style(best['series']))
    ax.scatter([best[field]], [best['best_valid_ppl_mean']], s=80, facecolors='none',
               edgecolors='black', zorder=4)
  ax.set_xscale('log')
  if tried:  # the tried values themselves, written as in the configs (0.006, not 6e-3)
    ax.set_xticks(sorted(tried), [f'{value:g}' for value in sorted(tried)])
    ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set(xlabel=field, ylabel='best valid perplexity',
         title=f'valid perplexity against {field} (circled: the tuned value)')
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
  return fig


def head_maps(table: pd.DataFrame) -> pd.DataFrame:
  """The aggregate rows that a head map draws: untied heads of their own kind."""
  return _own_heads(sweep_table.aggregate(_trained(table)))


def _own_heads(groups: pd.DataFrame) -> pd.DataFrame:
  return groups[(groups['head'] == 'untied') & (groups['head_kind'] != 'dense')
                & groups['rank'].notna() & groups['head_rank'].notna()]


def _head_cells(groups: pd.DataFrame, kind: str, head_kind: str) -> pd.DataFrame:
  """One panel's cells: (head, input rank, mean, vocab params), head the head rank of an
  untied `head_kind` head, 'tied' for the input's own tied points and 'D×V' for its untied
  dense head, each at the input ranks the map has; rows in map order (tied first)."""
  own = _own_heads(groups)
  own = own[(own['kind'] == kind) & (own['head_kind'] == head_kind)]
  ranks = set(own['rank'])
  same = groups[(groups['kind'] == kind) & groups['rank'].isin(ranks)]
  tied = same[same['head'] == 'tied'].assign(row='tied')
  dense_head = same[(same['head'] == 'untied') & (same['head_kind'] == 'dense')]
  cells = pd.concat([tied, own.assign(row=own['head_rank'].map(lambda r: str(int(r)))),
                     dense_head.assign(row='D×V')])
  return cells


def plot_head_map(table: pd.DataFrame, metric: str = 'test_ppl') -> Figure:
  """`metric` (mean over seeds) over input rank x head rank, one panel per pair of input
  kind and untied head kind, the input kind's tied points ('tied') and untied dense head
  ('D×V') as extra rows; one colour scale for every panel, each cell labelled with its value
  and vocabulary parameters."""
  groups = sweep_table.aggregate(_trained(table))
  maps = _own_heads(groups)
  pairs = list(dict.fromkeys(zip(maps['kind'], maps['head_kind'], strict=True)))
  panels = [_head_cells(groups, kind, head_kind) for kind, head_kind in pairs]
  values = [float(v) for cells in panels for v in cells[f'{metric}_mean']
            if sweep_table.is_number(v)]
  norm = Normalize(min(values, default=0.0), max(values, default=1.0))
  widths = [1.2 + 0.9 * cells['rank'].nunique() for cells in panels] or [3.0]
  fig, axes = _figure(len(widths), width=sum(widths) / len(widths) + 0.4, height=4.2,
                      gridspec_kw={'width_ratios': widths})
  image = None
  for ax, (kind, head_kind), cells in zip(axes, pairs, panels, strict=False):
    order = ['tied', *sorted({r for r in cells['row'] if r.isdigit()}, key=int), 'D×V']
    order = [r for r in order if r in set(cells['row'])]
    grid = cells.pivot_table(index='row', columns='rank', values=f'{metric}_mean',
                             aggfunc='first').reindex(order)
    params = cells.pivot_table(index='row', columns='rank', values='vocab_params',
                               aggfunc='first').reindex(order)
    image = ax.imshow(grid.to_numpy(float), origin='lower', cmap='viridis_r', aspect='auto',
                      norm=norm)
    ax.set_xticks(range(len(grid.columns)), [str(int(r)) for r in grid.columns])
    ax.set_yticks(range(len(grid.index)), list(grid.index))
    if 'tied' in order:  # the tied row is no head rank: set it apart
      ax.axhline(0.5, color='white', lw=3)
    for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
      if np.isfinite(value):  # dark text on the light (low) end of viridis_r
        light = norm(value) < 0.5
        ax.text(j, i, f'{value:.1f}\n{int(params.iloc[i, j]) / 1e3:,.0f}k', ha='center',
                va='center', fontsize=7, color='black' if light else 'white')
    ax.set(xlabel=f'input {kind} rank', ylabel=f'untied {head_kind} head rank',
           title=f'{kind} input, {head_kind} head')
  if image is not None:
    fig.colorbar(image, ax=axes, shrink=0.8, label=f'{metric.replace("_", " ")} (mean)')
    fig.suptitle(f'{metric.replace("_", " ")} over input rank × head rank (cells: value, '
                 'vocab params)', fontsize=10)
  return fig


def png_bytes(figure: Figure) -> bytes:
  """The figure as PNG bytes (for files written atomically)."""
  out = io.BytesIO()
  figure.savefig(out, format='png', dpi=DPI)
  return out.getvalue()


def plot_training_curves(scalars: pd.DataFrame, table: pd.DataFrame,
                         tag: str = 'train/loss') -> Figure:
  """`tag` against step, one panel per series of trained runs, one line per rank."""
  trained = readers.trained_points(table)
  fig, axes = _figure(trained['series'].nunique(), width=4.2)
  for ax, (series, rows) in zip(axes, trained.groupby('series', sort=False), strict=True):
    rows = rows.sort_values('rank')
    colors = _shades(_kind(series), len(rows))
    for color, (_, row) in zip(colors, rows.iterrows(), strict=True):
      curve = scalars[(scalars['run'] == row['run']) & (scalars['tag'] == tag)]
      label = row['run'] if pd.isna(row['rank']) else f'rank {row["rank"]}'
      ax.plot(curve['step'], curve['value'], color=color, label=label,
              marker='.' if len(curve) < 20 else None)
    ax.set(xlabel='step', ylabel=tag, title=series)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return fig


def plot_spectra(singular_values_by_name: Mapping[str, ArrayLike], reference: str | None = None,
                 fractions: Sequence[float] = spectrum.ENERGY_FRACTIONS) -> Figure:
  """Left: singular values against index (log scale); right: cumulative energy, with
  `fractions` dotted and the ranks at which `reference` reaches them marked. Names starting
  with a kind (dense, svd_rank8, albert_rank16) take that kind's colour, darker at higher rank."""
  fig, (left, right) = _figure(2, width=5.5, height=4.0)
  by_kind: dict[str, list[str]] = {}
  for name in singular_values_by_name:
    by_kind.setdefault(_kind(name), []).append(name)
  for kind, names in by_kind.items():
    colors = _shades(kind, len(names))
    for color, name in zip(colors, names, strict=True):
      sv = np.asarray(singular_values_by_name[name])
      index = np.arange(1, sv.size + 1)
      left.plot(index, sv, color=color, label=name)
      right.plot(index, spectrum.cumulative_energy(sv), color=color, label=name)
  for fraction in fractions:
    right.axhline(fraction, ls=':', color='gray', lw=1)
    if reference is not None:
      rank = spectrum.rank_for_energy(singular_values_by_name[reference], fraction)
      right.axvline(rank, ls=':', color=KIND_COLORS['dense'], lw=1)
      right.annotate(f'{fraction:.0%} of {reference}: R={rank}', (rank, fraction),
                     textcoords='offset points', xytext=(4, -12), fontsize=8)
  left.set(yscale='log', xlabel='index i', ylabel='singular value s_i', title='spectra')
  right.set(xlabel='rank R', ylabel='fraction of sum s^2 in the top R',
            title='cumulative energy', ylim=(0, 1.02))
  for ax in (left, right):
    ax.grid(alpha=0.3)
  left.legend(fontsize=7, ncol=2)
  return fig


def plot_reconstruction_error(singular_values: ArrayLike, marked_ranks: Sequence[int] = (),
                              name: str = 'W') -> Figure:
  """|W - W_R|_F / |W|_F against R (Eckart-Young), `marked_ranks` annotated."""
  error = spectrum.reconstruction_error(singular_values)
  fig, (ax,) = _figure(width=6.0)
  ax.plot(np.arange(error.size), error, color=KIND_COLORS['svd'])
  for rank in sorted(set(marked_ranks)):
    ax.plot(rank, error[rank], 'o', color=KIND_COLORS[sweep_table.POSTHOC_METHOD])
    ax.annotate(f'R={rank}: {error[rank]:.2f}', (rank, error[rank]),
                textcoords='offset points', xytext=(5, 5), fontsize=8)
  ax.set(xlabel='rank R', ylabel='relative error', ylim=(0, 1.02),
         title=f'best rank-R approximation: |{name} - {name}_R|_F / |{name}|_F')
  ax.grid(alpha=0.3)
  return fig


def plot_parameter_cost(cost: pd.DataFrame) -> Figure:
  """Embedding parameters of a rank-R SVD, R (V + D + 1), against the dense V D."""
  fig, (ax,) = _figure(width=6.0)
  ax.plot(cost['rank'], cost['svd_params'], marker='o' if len(cost) <= 16 else None,
          color=KIND_COLORS['svd'], label='svd: R (V + D + 1)')
  ax.axhline(cost['dense_params'].iloc[0], ls=':', color=KIND_COLORS['dense'],
             label='dense: V D')
  ax.set(xlabel='rank R', ylabel='embedding parameters', title='parameter cost of rank R')
  ax.grid(alpha=0.3)
  ax.legend()
  return fig
