"""Post-hoc SVD compression of a trained dense embedding: exact at full rank, monotone in rank."""

import csv
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from tensorboard.backend.event_processing import event_accumulator

from configs import brown
from factorized.analysis import report as sweep_report
from factorized.config import build
from factorized.evaluation import posthoc
from factorized.evaluation import saved as eval_run
from factorized.train import trainer
from factorized.train import workdir as workdir_lib
from tests.test_train_cli import cli_env


def scalars(workdir, tag):
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'scalars': 0})
  events.Reload()
  return [(e.step, e.value) for e in events.Scalars(tag)]


def write_markov_corpus(directory) -> dict[str, str]:
  """A Markov chain over 40 words: the next word depends on the current one, so the model
  predicts from its input embedding (i.i.d. words would need none)."""
  rng = np.random.default_rng(0)
  files = {}
  for split, num_lines in (('train', 400), ('valid', 60), ('test', 40)):
    lines = []
    for _ in range(num_lines):
      word, sentence = int(rng.integers(40)), []
      for _ in range(int(rng.integers(4, 12))):
        sentence.append(f'w{word}')
        word = (7 * word + 3) % 40 if rng.random() < 0.8 else (word + 1) % 40
      lines.append(' '.join(sentence))
    files[f'{split}_files'] = str(directory / f'{split}.txt')
    (directory / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  return files


@pytest.fixture(scope='module')
def trained_dense(tmp_path_factory):
  """A tiny dense run (model_dim 16, ~40 words) trained 300 steps, as the dense point of a
  sweep directory; returns its workdir and summary."""
  root = tmp_path_factory.mktemp('posthoc')
  config = brown.get_config('runlocal')  # tiny_config's sizes, on the Markov corpus
  config.data.update(corpus='text', vocab_size=0, min_freq=2, seq_len=8,
                     cache_dir=str(root / 'cache'), **write_markov_corpus(root))
  config.model.update(model_dim=16, mlp_dim=32)
  config.train.update(num_steps=300, batch_size=8, eval_batch_size=8, warmup_steps=30,
                      eval_every=300, ckpt_every=300, log_every=100)
  workdir = root / 'sweep' / 'dense'
  summary = trainer.train_and_evaluate(build.from_config(config), str(workdir))
  sweep_report.write_reports(workdir.parent)
  return workdir, summary


def test_full_rank_is_the_dense_model_and_ppl_does_not_fall_with_the_rank(trained_dense):
  workdir, summary = trained_dense
  ranks = [1, 2, 4, 8, 16]  # 16 = min(V, D)
  result = posthoc.posthoc_svd(str(workdir), 'valid', ranks)
  np.testing.assert_allclose(result['dense_ppl'], summary['valid_ppl'], rtol=1e-6)
  np.testing.assert_allclose(result['ppl_by_rank']['16'], result['dense_ppl'], rtol=1e-4)
  ppl = [result['ppl_by_rank'][str(rank)] for rank in ranks]
  assert all(np.diff(ppl) <= 0), ppl
  assert ppl[0] > 2 * ppl[-1], ppl  # the model relies on its embedding
  saved = json.loads((workdir / 'posthoc_svd_valid.json').read_text())
  assert saved == json.loads(json.dumps(result))
  assert {'split', 'dense_ppl', 'ppl_by_rank'} <= set(saved) and saved['split'] == 'valid'
  assert saved['params_by_rank']['4']['embedding'] == summary['vocab_size'] * 4 + 4 + 4 * 16
  logged = scalars(workdir, 'posthoc_svd/valid_ppl')
  assert [step for step, _ in logged] == ranks
  np.testing.assert_allclose([value for _, value in logged], ppl, rtol=1e-6)
  with pytest.raises(ValueError, match=r'--svd_ranks: \[17\] outside \[1, min\(vocab_size, '
                                       r'model_dim\)=16\]'):
    posthoc.posthoc_svd(str(workdir), 'valid', [8, 17])


def test_eval_cli_fine_tunes_and_adds_rows_to_the_sweep_table(trained_dense, repo_root):
  workdir, _ = trained_dense
  result = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={workdir}', '--split=test', '--svd_ranks=2,16',
       '--svd_finetune_steps=30'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout)
  assert printed == json.loads((workdir / 'posthoc_svd_test.json').read_text())
  assert printed['finetune_steps'] == 30
  assert set(printed['ppl_by_rank']) == set(printed['finetuned_ppl_by_rank']) == {'2', '16'}
  # Fine-tuning recovers much of what truncation to rank 2 lost.
  assert printed['finetuned_ppl_by_rank']['2'] < printed['ppl_by_rank']['2']
  rows = list(csv.DictReader((workdir.parent / 'summary.csv').open()))
  test_rows = {(r['kind'], r['rank']): float(r['test_ppl']) for r in rows if r['test_ppl']}
  assert test_rows[('posthoc_svd', '2')] == printed['ppl_by_rank']['2']
  assert test_rows[('posthoc_svd_ft30', '16')] == printed['finetuned_ppl_by_rank']['16']
  # The compute-matched control: the dense model fine-tuned the same 30 steps.
  assert test_rows[('dense_ft30', '')] == printed['dense_finetuned_ppl']
  assert printed['checkpoint'] == 'best'  # the checkpoint summary.json's test_ppl uses
  assert [s for s, _ in scalars(workdir, 'posthoc_svd_finetuned/test_ppl')] == [2, 16]
  with pytest.raises(ValueError, match='--svd_ranks=4,x: expected integers'):
    posthoc.parse_ranks(['4', 'x'])  # what eval.py reports (exit status 1)


def test_untied_head_is_kept_and_only_dense_runs_are_compressed(tiny_config, tmp_path):
  tiny_config.model.embed.head = 'untied'
  dense = trainer.build_run(build.from_config(tiny_config), str(tmp_path / 'untied'))
  svd = posthoc.run_from_dense(dense, posthoc.svd_config(dense.config, 16))
  dense_params, svd_params = (nnx.to_pure_dict(jax.device_get(run.state.params))
                              for run in (dense, svd))
  np.testing.assert_array_equal(svd_params['head']['W_VxD'], dense_params['head']['W_VxD'])
  np.testing.assert_allclose(svd.evaluator('valid')(svd.state.params)['ppl'],
                             dense.evaluator('valid')(dense.state.params)['ppl'], rtol=1e-4)
  workdir_lib.prepare_workdir(tmp_path / 'svd',
                              build.from_config(brown.get_config('runlocal,kind=svd')))
  with pytest.raises(ValueError, match="compresses a dense run; .* model.embed.kind='svd'"):
    posthoc.posthoc_svd(str(tmp_path / 'svd'), 'test', [4])


def test_fine_tuned_factors_move_the_table_as_fast_as_dense(trained_dense):
  """One Adam step on the SVD-initialised model moves U s V within 1.5x of what it moves the
  trained dense table (a plain U = Q_U, s = S split moves it many times further)."""
  from tests.test_trainer import first_step_movement

  workdir, _ = trained_dense
  dense, _ = eval_run.restore_run(str(workdir), 'best')
  # A rate that moves the table measurably in one step, at once.
  config = posthoc.finetune_config(dense.config, 10).replace(
      **{'train.lr': 3e-3, 'train.warmup_steps': 0})
  reference = first_step_movement(posthoc.run_from_dense(dense, config))
  for rank in (16, 8, 4, 2):  # 16 = min(V, D)
    ratio = first_step_movement(
        posthoc.run_from_dense(dense, posthoc.svd_config(config, rank))) / reference
    assert ratio < 1.5, (rank, ratio)
    if rank >= 8:  # lower ranks have fewer directions to move in, and move less
      assert ratio > 1 / 1.5, (rank, ratio)


def skewed_table_and_counts(vocab=120, dim=12, seed=0):
  """A table with a decaying spectrum, and Zipf train counts in a shuffled id order."""
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(vocab, dim)) * np.linspace(2.0, 0.2, dim)
  counts = rng.permutation(1000 // np.arange(1, vocab + 1))
  return table, counts


def test_frequency_weighted_truncation_is_plain_svd_for_uniform_counts_and_beats_it_for_skewed():
  table, counts = skewed_table_and_counts()
  u, s, vt = np.linalg.svd(table, full_matrices=False)
  weighted_s = np.linalg.svd(np.sqrt(counts)[:, None] * table, compute_uv=False)
  for rank in (1, 3, 6, 11):
    plain = (u[:, :rank] * s[:rank]) @ vt[:rank]
    np.testing.assert_allclose(posthoc.weighted_truncation(table, np.full(len(table), 7.0), rank),
                               plain, atol=1e-10)
    weighted = posthoc.weighted_truncation(table, counts, rank)
    assert np.linalg.matrix_rank(weighted, tol=1e-8) == rank
    error = posthoc.weighted_error(table, weighted, counts)
    assert error < posthoc.weighted_error(table, plain, counts), rank
    # It attains the bound: the weighted table's energy beyond rank R (Eckart-Young).
    np.testing.assert_allclose(error, np.sum(weighted_s[rank:] ** 2), rtol=1e-8)


def test_bands_give_frequent_ids_more_rank_within_the_svd_budget():
  table, counts = skewed_table_and_counts()
  vocab, dim = table.shape
  order = np.argsort(-counts, kind='stable')
  rows = posthoc.band_rows(order, (10, 40))
  assert [len(ids) for ids in rows] == [10, 30, 80] and np.array_equal(rows[0], order[:10])
  for rank in (3, 6, 10):
    budget = rank * (vocab + dim + 1)  # the rank-R svd model's embedding
    ranks = posthoc.band_ranks(table, counts, rows, budget)
    spent = sum(r * (len(ids) + dim) for r, ids in zip(ranks, rows, strict=True))
    assert spent <= budget and budget - spent < len(rows[-1]) + dim, (rank, ranks)
    assert ranks[0] > ranks[2] and ranks[0] <= 10, ranks  # frequent ids get more rank
  with pytest.raises(ValueError, match='cannot give each of the 3 bands rank 1'):
    posthoc.band_ranks(table, counts, rows, 100)


def test_frequency_weighted_and_banded_posthoc_rows_beside_posthoc_svd(trained_dense, repo_root):
  workdir, summary = trained_dense
  full = posthoc.posthoc_svd(str(workdir), 'valid', [16], weighting='frequency')
  np.testing.assert_allclose(full['ppl_by_rank']['16'], full['dense_ppl'], rtol=1e-4)
  assert full['method'] == 'posthoc_svd_freq'
  result = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={workdir}', '--split=test', '--svd_ranks=4,8',
       '--svd_weighting=frequency', '--svd_bands=10'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  banded = json.loads((workdir / 'posthoc_svd_freq_bands_test.json').read_text())
  assert banded == json.loads(result.stdout) and banded['bands'] == [10]
  vocab = summary['vocab_size']
  for rank in ('4', '8'):
    ranks = banded['band_ranks_by_rank'][rank]
    assert len(ranks) == 2 and min(ranks) >= 1  # (near-uniform counts here: see the unit test)
    embedding = banded['params_by_rank'][rank]['embedding']
    assert embedding == sum(r * (n + 16) for r, n in zip(ranks, (10, vocab - 10), strict=True))
    assert embedding <= int(rank) * (vocab + 16 + 1)  # within the rank-R svd's parameters
  rows = list(csv.DictReader((workdir.parent / 'summary.csv').open()))
  kinds = [r['kind'] for r in rows]
  assert 'posthoc_svd_freq' in kinds and 'posthoc_svd_freq_bands' in kinds
  assert kinds.index('posthoc_svd_freq') > kinds.index('dense')
  test_rows = {(r['kind'], r['rank']): r for r in rows}
  assert float(test_rows[('posthoc_svd_freq_bands', '8')]['test_ppl']) == banded['ppl_by_rank']['8']
  assert int(test_rows[('posthoc_svd_freq_bands', '8')]['vocab_params']) == (
      banded['params_by_rank']['8']['vocab'])
  assert [s for s, _ in scalars(workdir, 'posthoc_svd_freq_bands/test_ppl')] == [4, 8]
  with pytest.raises(ValueError, match=r'--svd_bands=10,5: expected increasing frequency ranks'):
    posthoc.posthoc_svd(str(workdir), 'test', [4], bands=['10', '5'])
