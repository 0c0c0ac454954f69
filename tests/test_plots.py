"""plots.py: every figure draws from the helpers' tables; kinds get colours from KINDS; the
headline answers one question (test perplexity against vocabulary parameters per kind)."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from factorized import embeddings
from factorized.analysis import interpret, plots, readers
from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table
from tests.test_sweep import fake_run, quant_runs, quant_sweep

DENSE_TESTS = (100.0, 102.0, 104.0)  # dense's three seeds: mean 102, sd 2


@pytest.fixture
def small_sweep(tmp_path_factory):
  """A sweep directory with every kind of row a figure draws: dense over three seeds and at
  a second learning rate, svd, albert and tt at two or three ranks (svd 8 also at a second
  rate), an untied svd head of its own kind and an untied dense head, and a post-hoc SVD of
  the dense run (fine-tuned too). Valid perplexity makes svd 8 and dense tune to 6e-3."""
  tmp_path = tmp_path_factory.mktemp('small_sweep')  # apart from fake_sweep's tmp_path
  for seed, test in enumerate(DENSE_TESTS):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, valid=test - 5, test=test, seed=seed)
  fake_run(tmp_path, 'dense_lr0.006_seed0', 'dense', 16, valid=90.0, test=99.0, lr=6e-3)
  for kind, rank, test in (('svd', 4, 150.0), ('svd', 8, 120.0), ('svd', 16, 110.0),
                           ('albert', 4, 160.0), ('albert', 8, 125.0),
                           ('tt', 4, 105.0), ('tt', 8, 101.0)):
    fake_run(tmp_path, f'{kind}_rank{rank}_seed0', kind, rank, valid=test - 5, test=test)
  fake_run(tmp_path, 'svd_rank8_lr0.006_seed0', 'svd', 8, valid=100.0, test=112.0, lr=6e-3)
  fake_run(tmp_path, 'svd_rank8_untied_headsvd16_seed0', 'svd', 8, head='untied',
           head_kind='svd', head_rank=16, valid=110.0, test=115.0)
  fake_run(tmp_path, 'svd_rank8_untied_seed0', 'svd', 8, head='untied', valid=108.0,
           test=113.0)
  posthoc = {'split': 'test', 'dense_ppl': 100.0, 'head': 'tied',
             'ppl_by_rank': {'4': 400.0, '8': 200.0},
             'params_by_rank': {'4': {'embedding': 4260, 'total': 9260},
                                '8': {'embedding': 8520, 'total': 13520}},
             'finetune_steps': 10, 'finetuned_ppl_by_rank': {'4': 140.0, '8': 115.0},
             'dense_finetuned_ppl': 99.5, 'dense_params': {'embedding': 64000, 'total': 69000}}
  (tmp_path / 'dense_seed0' / 'posthoc_svd_test.json').write_text(json.dumps(posthoc))
  return tmp_path


def _table(sweep_dir) -> pd.DataFrame:
  return sweep_table.rows_table(sweep_table.collect_rows(sweep_dir)[0])


def _overlap(a, b) -> bool:
  return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_every_plot_draws(dense_embedding, fake_sweep, small_sweep):
  table = readers.load_sweep_table(fake_sweep)
  small = _table(small_sweep)
  scalars = pd.DataFrame({'run': ['dense', 'dense', 'svd_rank4'], 'tag': ['train/loss'] * 3,
                          'step': [1, 2, 1], 'value': [3.0, 2.0, 3.5], 'wall_time': 0.0})
  sv = dense_embedding.singular_values()
  spectra = {'dense': sv, 'svd_rank4': sv[:4], 'svd_rank8': sv[:8], 'albert_rank4': sv[:5],
             'tt_rank4': sv[::2], 'adaptive_rank8': sv[:10]}
  figures = [plots.plot_ppl(table, 'vocab_params'), plots.plot_ppl(table, 'rank', ('test',)),
             plots.plot_headline(small), plots.plot_headline(small, 'rank'),
             plots.plot_band_ppl(small), plots.plot_posthoc(small), plots.plot_tuning(small),
             plots.plot_head_map(small),
             plots.plot_training_curves(scalars, table),
             plots.plot_spectra(spectra, reference='dense'),
             plots.plot_reconstruction_error(sv, [4, 8]),
             plots.plot_parameter_cost(interpret.svd_parameter_cost(100, 16, [2, 4, 8]))]
  for fig in figures:
    assert isinstance(fig, Figure) and fig.axes
    fig.canvas.draw()
  for fig in figures[:4] + figures[5:]:  # the band figure's panels need band columns
    assert all(ax.has_data() for ax in fig.axes)


def test_the_reports_write_each_figure_under_its_own_name(small_sweep):
  sweep_report.write_reports(small_sweep)
  names = (*sweep_report.PNG_FILES, sweep_report.TUNING_PNG_FILE, sweep_report.HEAD_MAP_FILE,
           sweep_report.POSTHOC_PNG_FILE)
  assert len(set(names)) == len(names)
  for name in names:
    assert (small_sweep / name).read_bytes()[:4] == b'\x89PNG', name


def test_the_headline_has_one_line_per_kind_and_dense_as_a_band(small_sweep):
  fig = plots.plot_headline(_table(small_sweep))
  (ax,) = fig.axes
  lines = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
  # Tied heads at the grid's own rate only: no untied head, no post-hoc row, no second rate.
  assert sorted(c.get_label().split()[0] for c in lines) == ['albert', 'svd', 'tt']
  svd = next(c for c in lines if c.get_label().startswith('svd'))
  np.testing.assert_array_equal(svd.lines[0].get_ydata(), [150.0, 120.0, 110.0])
  (band,) = ax.patches  # dense: mean ± sd over its three seeds
  assert (band.get_y(), band.get_height()) == pytest.approx((100.0, 4.0))
  labels = ax.get_legend_handles_labels()[1]
  assert 'dense: mean ± sd over 3 seeds (band)' in labels
  assert 'dense at its tuned lr' in labels  # 6e-3, as svd 8's hollow point
  assert ax.get_xscale() == 'log'
  # The legend sits outside the data; the rank labels overlap neither it nor each other.
  assert ax.get_legend() is None and len(fig.legends) == 1
  fig.draw_without_rendering()
  legend = fig.legends[0].get_window_extent()
  assert not _overlap(legend, ax.get_window_extent())
  boxes = [text.get_window_extent() for text in ax.texts]
  ranks = sorted(text.get_text() for text in ax.texts)
  assert ranks == sorted(['4', '8', '16'] + ['4', '8'] * 2)  # here every label finds room
  assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_an_outlier_does_not_set_the_headline_y_range(small_sweep):
  fake_run(small_sweep, 'svd_rank2_seed0', 'svd', 2, valid=5000.0, test=5000.0)
  table = _table(small_sweep)
  fig = plots.plot_headline({'one protocol': table, 'another': table})
  left, right = fig.axes
  assert left.get_shared_y_axes().joined(left, right)
  bottom, top = left.get_ylim()
  assert top <= 1.1 * plots.Y_CLIP * np.mean(DENSE_TESTS) < 5000.0
  assert bottom < 100.0  # the dense band and every other point stay in
  # The outlier is marked on the top edge, its value written beside it.
  assert any(text.get_text() == '2: 5000' for text in left.texts)
  assert [ax.get_title() for ax in fig.axes] == ['one protocol', 'another']


def test_the_split_out_figures_show_what_the_headline_leaves_out(small_sweep):
  table = _table(small_sweep)
  (ax,) = plots.plot_posthoc(table).axes
  labels = ax.get_legend_handles_labels()[1]
  assert {'svd from scratch', 'posthoc_svd', 'posthoc_svd_ft10 (fine-tuned 10 steps)',
          'dense_ft10 (fine-tuned as long)'} <= set(labels)
  assert ax.get_yscale() == 'log' and ax.get_ylim()[1] > 400.0  # a log axis keeps the 400
  (ax, _colorbar) = plots.plot_head_map(table).axes
  assert [t.get_text() for t in ax.get_yticklabels()] == ['tied', '16', 'D×V']
  (ax,) = plots.plot_tuning(table).axes
  assert [t.get_text() for t in ax.get_xticklabels()] == ['0.003', '0.006']
  assert plots.posthoc_rows(table[~table['kind'].str.startswith('posthoc')]).empty


def test_every_series_is_placed_by_vocab_params_and_every_kind_has_its_own_colour(fake_sweep):
  table = readers.load_sweep_table(fake_sweep)
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


def test_the_bytes_front_draws_one_point_per_row_and_the_front_as_steps(tmp_path):
  quant_sweep(tmp_path)
  table = _table(tmp_path)
  points = sweep_table.bytes_rows(table)
  (ax,) = plots.plot_bytes_front(table).axes
  drawn = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
  assert sum(len(line.get_xdata()) for line in drawn) == len(points) == 5
  labels = ax.get_legend_handles_labels()[1]
  assert {'dense float32', 'dense int8 post-training', 'dense int4 post-training',
          'svd float32', 'svd int8 QAT', 'Pareto front'} <= set(labels)
  front = next(line for line in ax.get_lines() if line.get_label() == 'Pareto front')
  np.testing.assert_array_equal(front.get_xdata(), [8600, 34000, 66000, 256000])
  assert (ax.get_xscale(), ax.get_yscale()) == ('log', 'log')
  assert len(ax.patches) == 0 and 'dense' in labels  # one dense seed: a line, no band
  # One byte size: nothing to compare, no figure.
  single = tmp_path / 'single'
  fake_run(single, 'dense', 'dense', 16)
  sweep_report.write_reports(single)
  assert not (single / sweep_report.BYTES_PNG_FILE).exists()


def test_the_parameter_figures_leave_dpq_to_the_bytes_front(tmp_path):
  fake_run(tmp_path, 'dense', 'dense', 16)
  fake_run(tmp_path, 'svd_rank8', 'svd', 8)
  fake_run(tmp_path, 'dpq_rank16', 'dpq', 16)
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  assert list(plots.headline_rows(table)['kind']) == ['dense', 'svd']
  assert 'dpq' in list(sweep_table.bytes_rows(table)['kind'])


def test_the_band_figure_has_a_bytes_twin_with_a_front_per_band(tmp_path):
  # dense float32, svd 8 float32 and svd 8 trained int8: each band's panel draws the three
  # (svd's two precisions apart) and its own front: band 1-100's reaches dense, the best
  # there; band 101-1000's stops at svd float32, dense the worst there.
  def bands(low, high):
    return {'1-100': {'ppl': low, 'tokens': 5}, '101-1000': {'ppl': high, 'tokens': 3}}

  quant_runs(tmp_path, {'dense': bands(10.0, 300.0), 'svd_rank8': bands(12.0, 200.0),
                        'svd_rank8_quant_bits8': bands(13.0, 210.0)})
  table = _table(tmp_path)
  frequent, rare = plots.plot_band_bytes(table).axes
  assert (frequent.get_title(), rare.get_title()) == ('band 1-100', 'band 101-1000')
  for ax, front in ((frequent, [8600, 34080, 256000]), (rare, [8600, 34080])):
    drawn = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert sorted(x for line in drawn for x in line.get_xdata()) == [8600, 34080, 256000]
    line = next(line for line in ax.get_lines() if line.get_label() == 'Pareto front')
    np.testing.assert_array_equal(line.get_xdata(), front)
  sweep_report.write_reports(tmp_path)
  assert (tmp_path / sweep_report.BAND_BYTES_PNG_FILE).read_bytes()[:4] == b'\x89PNG'
