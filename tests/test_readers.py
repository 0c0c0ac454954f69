"""factorized/analysis/readers.py: events, summaries, sweep tables, post-hoc rows and trained
embeddings."""

import json

import numpy as np
import pandas as pd
import pytest

from factorized.analysis import readers
from factorized.analysis import table as sweep_table


def test_load_scalars_gives_the_numbers_written(runs):
  sweep, returned, written = runs
  scalars = readers.load_scalars(sweep)
  assert list(scalars.columns) == list(readers.SCALAR_COLUMNS)
  assert list(scalars['run'].unique()) == ['dense']
  assert set(scalars['tag']) == set(written['tag'])
  for tag, expected in written.groupby('tag'):
    series = readers.scalar_series(scalars, 'dense', tag)
    assert list(series.index) == list(expected['step'])  # none dropped or down-sampled
    np.testing.assert_allclose(series.to_numpy(), expected['value'], rtol=1e-6)  # float32
  summary = readers.load_summary(sweep / 'dense')
  assert summary == json.loads(json.dumps(returned))
  valid = readers.scalar_series(scalars, 'dense', 'valid/ppl')
  np.testing.assert_allclose(valid.iloc[-1], summary['valid_ppl'], rtol=1e-6)
  assert valid.index[-1] == summary['steps']
  np.testing.assert_allclose(readers.scalar_series(scalars, 'dense', 'test/ppl').iloc[-1],
                             summary['test_ppl'], rtol=1e-6)
  train_loss = readers.scalar_series(scalars, 'dense', 'train/loss')
  assert list(train_loss.index) == [2, 4, 6, 8, 10]


def test_load_scalars_of_one_run_and_missing_runs(runs):
  sweep, _, _ = runs
  one = readers.load_scalars(sweep / 'dense')
  assert set(one['run']) == {'.'}  # TensorBoard's name for the logdir itself
  selected = readers.load_scalars(sweep, runs=['dense'])
  np.testing.assert_array_equal(one['value'], selected['value'])
  with pytest.raises(FileNotFoundError, match=r"runs \['nope'\].*\['dense'\]"):
    readers.load_scalars(sweep, runs=['nope'])
  with pytest.raises(KeyError, match="No scalar 'x/y' in run 'dense'"):
    readers.scalar_series(selected, 'dense', 'x/y')
  last = readers.final_scalars(selected, ['valid/ppl', 'nope'])
  valid = selected[selected['tag'] == 'valid/ppl']
  assert last.loc['dense', 'valid/ppl'] == valid['value'].iloc[-1]
  assert np.isnan(last.loc['dense', 'nope'])
  with pytest.raises(FileNotFoundError, match='has not finished'):
    readers.load_summary(sweep)


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
  table = readers.load_sweep_table(fake_sweep)
  # A summary.csv from before the step and bytes columns: its head, method and bytes
  # columns filled in (float32 tables: 4 bytes a parameter).
  assert list(table.columns) == [c for c in (*sweep_table.COLUMNS, 'series')
                                 if c not in ('steps', 'best_step')]
  assert (table['vocab_bytes'] == 4 * table['vocab_params']).all()
  assert str(table['rank'].dtype) == 'Int64' and pd.isna(table.loc[0, 'rank'])
  # A summary.csv from before the head columns: a tied head is the input's, untied the DxV.
  assert list(table['head_kind'][:5]) == ['dense', 'albert', 'svd', 'svd', 'dense']
  assert table['head_rank'][:5].tolist() == [pd.NA, 4, 4, 8, pd.NA]
  assert list(table['series']) == ['dense', 'albert', 'svd', 'svd', 'svd_untied',
                                   'posthoc_svd', 'posthoc_svd', 'posthoc_svd_ft10',
                                   'posthoc_svd_ft10', 'posthoc_svd_freq']
  # The method the kind spelled then: post-hoc (fine-tuned or not) and trained rows.
  assert list(table['method'][3:8]) == ['trained', 'trained', 'posthoc_svd', 'posthoc_svd',
                                        'posthoc_svd']
  assert list(table['finetune_steps'][5:]) == [0, 0, 10, 10, 0]
  assert table['method'].iloc[-1] == 'posthoc_svd_freq'
  assert list(readers.trained_points(table)['run']) == [
      'dense', 'albert_rank4', 'svd_rank4', 'svd_rank8', 'svd_rank4_untied']
  posthoc = readers.load_posthoc_svd(fake_sweep)
  assert posthoc.to_dict('list') == {
      'run': ['dense'] * 5, 'method': ['posthoc_svd'] * 4 + ['posthoc_svd_freq'],
      'split': ['test'] * 5, 'rank': [4, 8, 4, 8, 4], 'finetune_steps': [0, 0, 10, 10, 0],
      'ppl': [90.0, 70.0, 80.0, 65.0, 85.0], 'dense_ppl': [52.5] * 5}
  empty = tmp_path_factory.mktemp('empty')
  assert readers.load_posthoc_svd(empty).empty
  with pytest.raises(FileNotFoundError, match='run the sweep first.*FACTORIZED_SWEEP_DIR'):
    readers.load_sweep_table(empty)


def test_repo_path_finds_the_repository_from_anywhere(repo_root, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert readers.repo_path('configs/brown.py') == str(repo_root / 'configs/brown.py')
  (tmp_path / 'here').mkdir()
  assert readers.repo_path('here') == 'here'
  assert readers.repo_path('/abs/x') == '/abs/x'


def _patch(run_dir, **fields):
  """Rewrites a fake run's summary.json with `fields` updated (train.* keys into its config)."""
  path = run_dir / 'summary.json'
  summary = json.loads(path.read_text())
  for key, value in fields.items():
    if key.startswith('train.'):
      summary['config']['train'][key.removeprefix('train.')] = value
    else:
      summary[key] = value
  path.write_text(json.dumps(summary))


def _groups(losses, tokens):
  return {name: {'loss': loss, 'ppl': float(np.exp(loss)), 'tokens': count}
          for (name, loss), count in zip(losses.items(), tokens, strict=True)}


BANDS = {'1-100': 3.0, '101-1000': 6.0, '1001+': 12.0, '<unk>': 2.0}
CLASSES = {'0': 13.0, '1-3': 9.0, '4-10': 7.0, '11-100': 5.0, '101+': 3.0, '<unk>': 2.0}


def test_per_group_columns_give_perplexity_shares_and_the_frequent_groups_pooled(tmp_path):
  from tests.test_sweep import fake_run

  fake_run(tmp_path, 'dense', 'dense', 16)
  _patch(tmp_path / 'dense', test_bands=_groups(BANDS, (60, 20, 10, 10)),
         test_classes=_groups(CLASSES, (5, 5, 10, 20, 50, 10)))
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  row = table.iloc[0]
  assert (row['method'], row['finetune_steps'], row['steps'], row['best_step']) == (
      'trained', 0, 1500, 1500)
  assert row['test_share@1-100'] == pytest.approx(0.6)
  assert row['test_class_share@101+'] == pytest.approx(0.5)
  assert row['test_class_ppl@11-100'] == pytest.approx(np.exp(5.0))
  # Frequent bands: all but the open-ended rarest (1001+) and <unk>, by token-weighted loss.
  assert row['test_frequent_ppl@rank1-1000'] == pytest.approx(np.exp((60 * 3 + 20 * 6) / 80))
  # Frequent classes: 11 train occurrences or more.
  assert row['test_frequent_ppl@count11+'] == pytest.approx(np.exp((20 * 5 + 50 * 3) / 70))
  columns = [c for c in table.columns if '@' in c]
  assert columns[:2] == ['test_frequent_ppl@count11+', 'test_frequent_ppl@rank1-1000']
  assert columns[-4:] == [f'test_ppl@{band}' for band in BANDS]  # the bands last
  groups = sweep_table.aggregate(table)
  assert groups['test_class_ppl@0_mean'].iloc[0] == pytest.approx(np.exp(13.0))
  assert sweep_table.swept_columns(groups) == []
  # The frequent classes start where the run's eval.frequent_count says, not at a constant.
  summary = json.loads((tmp_path / 'dense' / 'summary.json').read_text())
  summary['config']['eval'] = {'count_edges': [1, 4, 11, 101], 'frequent_count': 4}
  (tmp_path / 'dense' / 'summary.json').write_text(json.dumps(summary))
  row = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]).iloc[0]
  assert 'test_frequent_ppl@count11+' not in row
  assert row['test_frequent_ppl@count4+'] == pytest.approx(
      np.exp((10 * 7 + 20 * 5 + 50 * 3) / 80))
  assert sweep_table.frequent_count('test_frequent_ppl@count4+') == 4
  assert sweep_table.frequent_count('test_frequent_ppl@rank1-1000') is None


def test_post_hoc_rows_carry_their_method_fine_tuning_and_steps(tmp_path):
  from tests.test_sweep import fake_run

  fake_run(tmp_path, 'dense', 'dense', 16)
  posthoc = {'split': 'test', 'dense_ppl': 50.0, 'head': 'tied', 'step': 1500,
             'ppl_by_rank': {'4': 90.0}, 'params_by_rank': {'4': {'embedding': 10, 'total': 20}},
             'finetune_steps': 300, 'finetuned_ppl_by_rank': {'4': 70.0},
             'dense_finetuned_ppl': 49.0, 'dense_params': {'embedding': 64, 'total': 74}}
  (tmp_path / 'dense' / 'posthoc_svd_test.json').write_text(json.dumps(posthoc))
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  derived = table[table['method'] != 'trained']
  assert [(r.kind, r.method, r.finetune_steps, r.steps) for r in derived.itertuples()] == [
      ('dense_ft300', 'finetuned', 300, 1800), ('posthoc_svd', 'posthoc_svd', 0, 1500),
      ('posthoc_svd_ft300', 'posthoc_svd', 300, 1800)]


def test_tuned_rows_choose_over_every_swept_field_by_valid_perplexity(tmp_path):
  from tests.test_sweep import fake_run

  # svd 8 at three rates (1,500 steps), at 3e-3 for 3,000 steps and at weight decay 0.3:
  # five configurations, not a full grid. 3,000 steps is best on valid (test says 6e-3).
  for name, valid, test, fields in (
      ('svd_rank8', 80.0, 85.0, {}), ('svd_rank8_lr0.0015', 90.0, 95.0, {'train.lr': 1.5e-3}),
      ('svd_rank8_lr0.006', 75.0, 60.0, {'train.lr': 6e-3}),
      ('svd_rank8_num_steps3000', 70.0, 75.0, {'train.num_steps': 3000, 'best_step': 2500,
                                               'steps': 3000}),
      ('svd_rank8_weight_decay0.3', 85.0, 90.0, {'train.weight_decay': 0.3})):
    fake_run(tmp_path, name, 'svd', 8, valid=valid, test=test)
    _patch(tmp_path / name, **{'train.weight_decay': 0.1, **fields})
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  every = sweep_table.tuned(table, over=None)
  assert len(every) == 1
  best = every.iloc[0]
  assert (best['lr'], best['num_steps'], best['weight_decay']) == (3e-3, 3000, 0.1)
  assert best['configs'] == 5 and best['grid'] == 12 and best['test_ppl_mean'] == 75.0
  assert best['tried'] == 'lr 0.0015+0.003+0.006; num_steps 1500+3000; weight_decay 0.1+0.3'
  assert best['edges'] == 'num_steps,weight_decay' and best['at_edge']
  # Best valid at step 2,500 of 3,000: it had stopped improving.
  assert best['best_step'] == '2500' and not best['best_at_last']
  # Over train.lr alone (the default: the tuning plot's), one row per other setting tried.
  by_lr = sweep_table.tuned(table)
  assert [(r.lr, r.num_steps, r.configs, r.tried) for r in by_lr.itertuples()] == [
      (6e-3, 1500, 3, '0.0015+0.003+0.006')]
