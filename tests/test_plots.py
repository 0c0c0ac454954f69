"""plots.py: every figure draws from the helpers' tables; kinds get colours from KINDS."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from factorized import embeddings
from factorized.analysis import interpret, plots, results


def test_every_plot_draws(dense_embedding, fake_sweep):
  table = results.load_sweep_table(fake_sweep)
  scalars = pd.DataFrame({'run': ['dense', 'dense', 'svd_rank4'], 'tag': ['train/loss'] * 3,
                          'step': [1, 2, 1], 'value': [3.0, 2.0, 3.5], 'wall_time': 0.0})
  sv = dense_embedding.singular_values()
  spectra = {'dense': sv, 'svd_rank4': sv[:4], 'svd_rank8': sv[:8], 'albert_rank4': sv[:5],
             'tt_rank4': sv[::2], 'adaptive_rank8': sv[:10]}
  figures = [plots.plot_ppl(table, 'vocab_params'), plots.plot_ppl(table, 'rank', ('test',)),
             plots.plot_training_curves(scalars, table),
             plots.plot_spectra(spectra, reference='dense'),
             plots.plot_reconstruction_error(sv, [4, 8]),
             plots.plot_parameter_cost(interpret.svd_parameter_cost(100, 16, [2, 4, 8]))]
  for fig in figures:
    assert isinstance(fig, Figure) and fig.axes
    assert all(ax.has_data() for ax in fig.axes)
    fig.canvas.draw()


def test_every_series_is_placed_by_vocab_params_and_every_kind_has_its_own_colour(fake_sweep):
  table = results.load_sweep_table(fake_sweep)
  (valid, test) = plots.plot_ppl(table, 'vocab_params').axes
  labels = test.get_legend_handles_labels()[1]
  assert {'dense', 'albert', 'svd', 'svd_untied', 'posthoc_svd', 'posthoc_svd_ft10',
          'posthoc_svd_freq', 'Pareto front'} <= set(labels)
  # The dense run is a point at its vocab params (not a line), so every kind shares the axis.
  xs = {label: line.get_xdata() for line, label in zip(*test.get_legend_handles_labels(),
                                                       strict=True)
        if hasattr(line, 'get_xdata')}
  np.testing.assert_array_equal(xs['Pareto front'], [300, 400, 600, 1000])
  colours = [plots.KIND_COLORS[kind] for kind in embeddings.KINDS]
  assert len(set(colours)) == len(colours)
  assert plots.KIND_COLORS['posthoc_svd_freq'] != plots.KIND_COLORS['posthoc_svd']
  assert plots.rank_label().startswith('rank (E for albert, R for svd')
