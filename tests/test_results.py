"""results.py: events, summaries, sweep tables, post-hoc rows and trained embeddings."""

import json

import numpy as np
import pandas as pd
import pytest

from factorized.analysis import results
from factorized.analysis import table as sweep_table


def test_load_scalars_gives_the_numbers_written(runs):
  sweep, returned, written = runs
  scalars = results.load_scalars(sweep)
  assert list(scalars.columns) == list(results.SCALAR_COLUMNS)
  assert list(scalars['run'].unique()) == ['dense']
  assert set(scalars['tag']) == set(written['tag'])
  for tag, expected in written.groupby('tag'):
    series = results.scalar_series(scalars, 'dense', tag)
    assert list(series.index) == list(expected['step'])  # none dropped or down-sampled
    np.testing.assert_allclose(series.to_numpy(), expected['value'], rtol=1e-6)  # float32
  summary = results.load_summary(sweep / 'dense')
  assert summary == json.loads(json.dumps(returned))
  valid = results.scalar_series(scalars, 'dense', 'valid/ppl')
  np.testing.assert_allclose(valid.iloc[-1], summary['valid_ppl'], rtol=1e-6)
  assert valid.index[-1] == summary['steps']
  np.testing.assert_allclose(results.scalar_series(scalars, 'dense', 'test/ppl').iloc[-1],
                             summary['test_ppl'], rtol=1e-6)
  train_loss = results.scalar_series(scalars, 'dense', 'train/loss')
  assert list(train_loss.index) == [2, 4, 6, 8, 10]


def test_load_scalars_of_one_run_and_missing_runs(runs):
  sweep, _, _ = runs
  one = results.load_scalars(sweep / 'dense')
  assert set(one['run']) == {'.'}  # TensorBoard's name for the logdir itself
  selected = results.load_scalars(sweep, runs=['dense'])
  np.testing.assert_array_equal(one['value'], selected['value'])
  with pytest.raises(FileNotFoundError, match=r"runs \['nope'\].*\['dense'\]"):
    results.load_scalars(sweep, runs=['nope'])
  with pytest.raises(KeyError, match="No scalar 'x/y' in run 'dense'"):
    results.scalar_series(selected, 'dense', 'x/y')
  last = results.final_scalars(selected, ['valid/ppl', 'nope'])
  valid = selected[selected['tag'] == 'valid/ppl']
  assert last.loc['dense', 'valid/ppl'] == valid['value'].iloc[-1]
  assert np.isnan(last.loc['dense', 'nope'])
  with pytest.raises(FileNotFoundError, match='has not finished'):
    results.load_summary(sweep)


def test_trained_embedding_factors_and_their_svd(dense_embedding, runs):
  sweep, summary, _ = runs
  vocab = summary['vocab_size']
  embedding = dense_embedding
  assert (embedding.name, embedding.kind, embedding.rank, embedding.step) == ('dense', 'dense',
                                                                              0, 12)
  assert [f.shape for f in embedding.factors] == [(vocab, 16)]
  np.testing.assert_array_equal(  # the run's own counts, saved with it
      embedding.token_counts_V, np.load(sweep / 'dense' / 'train_counts.npy'))
  assert embedding.token_counts_V.shape == (vocab,) and embedding.token_counts_V.sum() > 0
  (table_VxD,) = embedding.factors
  explicit = np.linalg.svd(table_VxD, compute_uv=False)
  sv = embedding.singular_values()
  np.testing.assert_allclose(sv, explicit[:sv.size], rtol=1e-4, atol=1e-6)
  u_VxK, s_K, vt_KxD = embedding.svd
  np.testing.assert_allclose(s_K, explicit[:s_K.size], rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose((u_VxK * s_K) @ vt_KxD, table_VxD, atol=1e-8)
  np.testing.assert_allclose(u_VxK.T @ u_VxK, np.eye(s_K.size), atol=1e-8)
  np.testing.assert_allclose(vt_KxD @ vt_KxD.T, np.eye(s_K.size), atol=1e-8)
  largest = u_VxK[np.argmax(np.abs(u_VxK), axis=0), np.arange(s_K.size)]
  assert np.all(largest > 0)  # deterministic signs


def test_load_sweep_table_and_posthoc_svd(fake_sweep, tmp_path_factory):
  table = results.load_sweep_table(fake_sweep)
  assert list(table.columns) == [*sweep_table.COLUMNS, 'series']
  assert str(table['rank'].dtype) == 'Int64' and pd.isna(table.loc[0, 'rank'])
  # A summary.csv from before the head columns: a tied head is the input's, untied the DxV.
  assert list(table['head_kind'][:5]) == ['dense', 'albert', 'svd', 'svd', 'dense']
  assert table['head_rank'][:5].tolist() == [pd.NA, 4, 4, 8, pd.NA]
  assert list(table['series']) == ['dense', 'albert', 'svd', 'svd', 'svd_untied',
                                   'posthoc_svd', 'posthoc_svd', 'posthoc_svd_ft10',
                                   'posthoc_svd_ft10', 'posthoc_svd_freq']
  assert list(results.trained_points(table)['run']) == [
      'dense', 'albert_rank4', 'svd_rank4', 'svd_rank8', 'svd_rank4_untied']
  posthoc = results.load_posthoc_svd(fake_sweep)
  assert posthoc.to_dict('list') == {
      'run': ['dense'] * 5, 'method': ['posthoc_svd'] * 4 + ['posthoc_svd_freq'],
      'split': ['test'] * 5, 'rank': [4, 8, 4, 8, 4], 'finetune_steps': [0, 0, 10, 10, 0],
      'ppl': [90.0, 70.0, 80.0, 65.0, 85.0], 'dense_ppl': [52.5] * 5}
  empty = tmp_path_factory.mktemp('empty')
  assert results.load_posthoc_svd(empty).empty
  with pytest.raises(FileNotFoundError, match='run the sweep first.*FACTORIZED_SWEEP_DIR'):
    results.load_sweep_table(empty)


def test_repo_path_finds_the_repository_from_anywhere(repo_root, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert results.repo_path('configs/brown.py') == str(repo_root / 'configs/brown.py')
  (tmp_path / 'here').mkdir()
  assert results.repo_path('here') == 'here'
  assert results.repo_path('/abs/x') == '/abs/x'
