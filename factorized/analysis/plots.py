"""Figures of a sweep and of trained embeddings, drawn from what results.py, spectrum.py and
interpret.py return.

Every function returns a matplotlib Figure, closed in pyplot so that a notebook shows it
once (as the cell's value). Sweep tables are results.load_sweep_table's: one curve per
`series` (kind, `_untied` for untied heads), rank empty for kinds without one (dense),
post-hoc rows of kind `posthoc_svd*`. Colours follow embeddings.KINDS (a new kind gets the
next one), shades of green for post-hoc compression.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jax.typing import ArrayLike
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from factorized import embeddings
from factorized.analysis import results
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
AXES = {'rank': 'rank', 'vocab_params': 'vocab params'}


def _figure(panels: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
  fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), layout='constrained',
                           squeeze=False)
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
  else:
    ax.set_xscale('log')
    ax.xaxis.set_minor_formatter(NullFormatter())


def _error_bars(ax, rows: pd.DataFrame, x: str, column: str, **style) -> None:
  """Mean over seeds with a bar of one standard deviation where there are several seeds."""
  std = rows[f'{column}_std'].astype(float).fillna(0.0)
  ax.errorbar(rows[x].astype(float), rows[f'{column}_mean'].astype(float), yerr=std,
              capsize=3, **style)


def _curves(ax, groups: pd.DataFrame, x: str, column: str) -> None:
  """One curve per series against `x` (rank or vocab_params), mean over seeds with std
  bars. Against rank, series without one (dense, dense_ft<N>) are horizontal lines; against
  vocab params they are points, the rank is annotated and the Pareto front drawn."""
  groups = groups[np.isfinite(groups[f'{column}_mean'].astype(float))]
  placed = groups[groups[x].notna()]
  for series, rows in placed.groupby('series', sort=False):
    _error_bars(ax, rows.sort_values(x), x, column, label=series, zorder=3, **_style(series))
  if x == 'rank':
    for _, row in groups[groups['rank'].isna()].iterrows():
      ax.axhline(row[f'{column}_mean'], color=KIND_COLORS.get(_kind(row['series'])), lw=1,
                 ls=':' if row['kind'] in embeddings.KINDS else '-.', label=row['series'])
  else:
    for _, row in placed[placed['rank'].notna()].iterrows():
      ax.annotate(str(row['rank']), (row[x], row[f'{column}_mean']),
                  textcoords='offset points', xytext=(4, 3), fontsize=7)
    front = sweep_table.pareto_front(placed, x, f'{column}_mean')
    ax.step(front[x], front[f'{column}_mean'], where='post', color='gray', lw=1,
            label='Pareto front', zorder=2)
  if not placed.empty:
    _log_axis(ax, x, placed[x])


def plot_ppl(table: pd.DataFrame, x: str = 'vocab_params',
             splits: Sequence[str] = ('valid', 'test')) -> Figure:
  """Perplexity against `x` per series (trained and post-hoc), one panel per split: mean over
  seeds with one-standard-deviation bars. x = 'vocab_params' (every parameter the embedding
  choice adds, costs.py) puts every kind on one axis, whatever its rank means; x = 'rank'
  draws kinds without a rank as horizontal lines."""
  groups = sweep_table.aggregate(table)
  fig, axes = _figure(len(splits), width=5.5 if x == 'rank' else 6.0)
  for ax, split in zip(axes, splits, strict=True):
    _curves(ax, groups, x, f'{split}_ppl')
    ax.set(xlabel=rank_label() if x == 'rank' else AXES[x], ylabel=f'{split} perplexity',
           title=f'{split} perplexity against {AXES[x]}')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  return fig


def plot_band_ppl(table: pd.DataFrame, x: str = 'vocab_params') -> Figure:
  """Test perplexity of each frequency band of the target (one panel per band) against `x`,
  per series: which words a small embedding costs. Mean over seeds with std bars."""
  bands = [c for c in sweep_table.metric_columns(table) if c.startswith(sweep_table.BAND_PREFIX)]
  groups = sweep_table.aggregate(table)
  fig, axes = _figure(max(1, len(bands)), width=3.8)
  for ax, band in zip(axes, bands, strict=False):
    _curves(ax, groups, x, band)
    ax.set(xlabel=AXES[x], ylabel='test perplexity',
           title=f'band {band.removeprefix(sweep_table.BAND_PREFIX)}')
    ax.grid(alpha=0.3)
  if bands and axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=6)
  if not bands:
    axes[0].set_title('no band perplexities in these summaries')
  return fig


def plot_tuning(table: pd.DataFrame, field: str = sweep_table.TUNED) -> Figure:
  """Best valid perplexity (mean over seeds, std bars) against a swept `field` (train.lr),
  one curve per kind, head and rank tried at several values; the tuned value circled."""
  groups = sweep_table.aggregate(table[table['kind'].isin(embeddings.KINDS)])
  chosen = sweep_table.tuned(table)
  fig, (ax,) = _figure(1, width=6.0)
  # A curve's points agree with its tuned row on everything but `field` (kind, head, rank
  # and any other swept field: a 3,000-step point is not on the 1,500-step curve).
  others = [c for c in sweep_table.swept_columns(groups) if c != field and c in chosen.columns]
  differ = [c for c in others if chosen[c].map(repr).nunique() > 1]  # named in the labels
  for _, best in chosen.iterrows():
    rows = groups[sweep_table.matching(groups, best, [*sweep_table.GROUP, *others])]
    rows = rows.sort_values(field)
    label = best['series'] + ('' if pd.isna(best['rank']) else f' {int(best["rank"])}')
    label += ''.join(f', {c} {best[c]:g}' if isinstance(best[c], float) else f', {c} {best[c]}'
                     for c in differ)
    _error_bars(ax, rows, field, 'best_valid_ppl', label=label, **_style(best['series']))
    ax.scatter([best[field]], [best['best_valid_ppl_mean']], s=80, facecolors='none',
               edgecolors='black', zorder=4)
  ax.set_xscale('log')
  ax.set(xlabel=field, ylabel='best valid perplexity',
         title=f'valid perplexity against {field} (circled: the tuned value)')
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  return fig


def head_maps(table: pd.DataFrame) -> pd.DataFrame:
  """The aggregate rows that a head map draws: untied heads of their own kind."""
  groups = sweep_table.aggregate(table[table['kind'].isin(embeddings.KINDS)])
  return groups[(groups['head'] == 'untied') & (groups['head_kind'] != 'dense')
                & groups['rank'].notna() & groups['head_rank'].notna()]


def plot_head_map(table: pd.DataFrame, metric: str = 'test_ppl') -> Figure:
  """`metric` (mean over seeds) over input rank x head rank, one panel per pair of input
  kind and head kind, each cell labelled with its value and vocabulary parameters."""
  groups = head_maps(table)
  pairs = list(dict.fromkeys(zip(groups['kind'], groups['head_kind'], strict=True)))
  fig, axes = _figure(max(len(pairs), 1), width=5.0)
  for ax, (kind, head_kind) in zip(axes, pairs, strict=False):
    rows = groups[(groups['kind'] == kind) & (groups['head_kind'] == head_kind)]
    grid = rows.pivot_table(index='head_rank', columns='rank', values=f'{metric}_mean',
                            aggfunc='first')
    params = rows.pivot_table(index='head_rank', columns='rank', values='vocab_params',
                              aggfunc='first')
    values = grid.to_numpy(float)
    image = ax.imshow(values, origin='lower', cmap='viridis_r', aspect='auto')
    ax.set_xticks(range(len(grid.columns)), [str(int(r)) for r in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(int(r)) for r in grid.index])
    low, high = np.nanmin(values), np.nanmax(values)
    for (i, j), value in np.ndenumerate(values):
      if np.isfinite(value):  # dark text on the light (low) end of viridis_r
        light = high == low or (value - low) / (high - low) < 0.5
        ax.text(j, i, f'{value:.1f}\n{int(params.iloc[i, j]) / 1e3:,.0f}k', ha='center',
                va='center', fontsize=7, color='black' if light else 'white')
    ax.set(xlabel=f'input {kind} rank', ylabel=f'head {head_kind} rank',
           title=f'{metric.replace("_", " ")}: {kind} input, {head_kind} head')
    fig.colorbar(image, ax=ax, shrink=0.8)
  return fig


def png_bytes(figure: Figure) -> bytes:
  """The figure as PNG bytes (for files written atomically)."""
  out = io.BytesIO()
  figure.savefig(out, format='png', dpi=120)
  return out.getvalue()


def plot_training_curves(scalars: pd.DataFrame, table: pd.DataFrame,
                         tag: str = 'train/loss') -> Figure:
  """`tag` against step, one panel per series of trained runs, one line per rank."""
  trained = results.trained_points(table)
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
