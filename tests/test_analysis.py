"""analysis.py and plots.py: event reading, spectra from factors, interpretation, figures."""

import json

import jax
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from configs import brown
from factorized import (
  analysis,
  costs,
  metric_writer,
  parallel,
  plots,
  spectrum,
  sweep_report,
  trainer,
)


def tiny_runlocal_config(root, kind):
  """conftest's tiny_config (a function-scoped fixture), made once per module here."""
  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(40)]
  probs = 1.0 / np.arange(1, 41)
  for split, num_lines in (('train', 120), ('valid', 30), ('test', 20)):
    path = root / f'{split}.txt'
    if not path.exists():
      lines = [' '.join(rng.choice(words, size=rng.integers(1, 9), p=probs / probs.sum()))
               for _ in range(num_lines)]
      path.write_text('\n'.join(lines) + '\n')
  config = brown.get_config(f'runlocal,kind={kind}')
  config.data.update(corpus='text', vocab_size=0, min_freq=2, seq_len=8,
                     cache_dir=str(root / 'cache'),
                     **{f'{s}_files': str(root / f'{s}.txt') for s in ('train', 'valid', 'test')})
  config.model.update(model_dim=16, mlp_dim=32)
  config.model.embed.rank = 8
  config.train.update(num_steps=12, batch_size=8, eval_batch_size=8, warmup_steps=2,
                      eval_every=6, ckpt_every=4, log_every=2)
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A tiny dense run in <root>/sweep/dense, and every scalar it wrote (the factorized
  kinds are read in test_notebooks.py, from a runlocal sweep)."""
  root = tmp_path_factory.mktemp('analysis')
  written = []
  original = metric_writer.MetricWriter.scalars

  def recording(self, step, values):
    written.extend((self._writer.logdir, tag, int(step), float(v)) for tag, v in values.items())
    return original(self, step, values)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(metric_writer.MetricWriter, 'scalars', recording)
    summary = trainer.train_and_evaluate(  # one device compiles fastest
        tiny_runlocal_config(root, 'dense'), str(root / 'sweep' / 'dense'),
        mesh=parallel.make_mesh(jax.devices()[:1]))
  return root / 'sweep', summary, pd.DataFrame(written, columns=['logdir', 'tag', 'step', 'value'])


@pytest.fixture(scope='module')
def embeddings(runs):
  sweep, _, _ = runs
  return {'dense': analysis.load_embedding(sweep / 'dense')}


def test_load_scalars_gives_the_numbers_written(runs):
  sweep, returned, written = runs
  scalars = analysis.load_scalars(sweep)
  assert list(scalars.columns) == list(analysis.SCALAR_COLUMNS)
  assert list(scalars['run'].unique()) == ['dense']
  assert set(scalars['tag']) == set(written['tag'])
  for tag, expected in written.groupby('tag'):
    series = analysis.scalar_series(scalars, 'dense', tag)
    assert list(series.index) == list(expected['step'])  # none dropped or down-sampled
    np.testing.assert_allclose(series.to_numpy(), expected['value'], rtol=1e-6)  # float32
  summary = analysis.load_summary(sweep / 'dense')
  assert summary == json.loads(json.dumps(returned))
  valid = analysis.scalar_series(scalars, 'dense', 'valid/ppl')
  np.testing.assert_allclose(valid.iloc[-1], summary['valid_ppl'], rtol=1e-6)
  assert valid.index[-1] == summary['steps']
  np.testing.assert_allclose(analysis.scalar_series(scalars, 'dense', 'test/ppl').iloc[-1],
                             summary['test_ppl'], rtol=1e-6)
  train_loss = analysis.scalar_series(scalars, 'dense', 'train/loss')
  assert list(train_loss.index) == [2, 4, 6, 8, 10]


def test_load_scalars_of_one_run_and_missing_runs(runs):
  sweep, _, _ = runs
  one = analysis.load_scalars(sweep / 'dense')
  assert set(one['run']) == {'.'}  # TensorBoard's name for the logdir itself
  selected = analysis.load_scalars(sweep, runs=['dense'])
  np.testing.assert_array_equal(one['value'], selected['value'])
  with pytest.raises(FileNotFoundError, match=r"runs \['nope'\].*\['dense'\]"):
    analysis.load_scalars(sweep, runs=['nope'])
  with pytest.raises(KeyError, match="No scalar 'x/y' in run 'dense'"):
    analysis.scalar_series(selected, 'dense', 'x/y')
  last = analysis.final_scalars(selected, ['valid/ppl', 'nope'])
  valid = selected[selected['tag'] == 'valid/ppl']
  assert last.loc['dense', 'valid/ppl'] == valid['value'].iloc[-1]
  assert np.isnan(last.loc['dense', 'nope'])
  with pytest.raises(FileNotFoundError, match='has not finished'):
    analysis.load_summary(sweep)


def test_trained_embedding_factors_and_their_svd(embeddings, runs):
  _, summary, _ = runs
  vocab = summary['vocab_size']
  embedding = embeddings['dense']
  assert (embedding.name, embedding.kind, embedding.rank, embedding.step) == ('dense', 'dense',
                                                                              0, 12)
  assert [f.shape for f in embedding.factors] == [(vocab, 16)]
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


def test_reconstruction_error_is_eckart_young():
  rng = np.random.default_rng(1)
  w_VxD = rng.normal(size=(30, 12)) * np.linspace(3, 0.1, 12)
  u, s, vt = np.linalg.svd(w_VxD, full_matrices=False)
  explicit = [np.linalg.norm(w_VxD - (u[:, :r] * s[:r]) @ vt[:r]) / np.linalg.norm(w_VxD)
              for r in range(13)]
  np.testing.assert_allclose(analysis.reconstruction_error(s), explicit, atol=1e-12)
  np.testing.assert_allclose(analysis.reconstruction_error(s[::-1], [0, 5, 12]),
                             np.asarray(explicit)[[0, 5, 12]], atol=1e-12)
  with pytest.raises(ValueError, match=r'must lie in \[0, 12\]'):
    analysis.reconstruction_error(s, [13])


@pytest.mark.parametrize('shapes', [[(20, 9)], [(20, 5), (5, 9)], [(20, 5), (5, 4), (4, 9)]])
def test_factored_svd_is_the_svd_of_the_product(shapes):
  rng = np.random.default_rng(2)
  factors = [rng.normal(size=shape) for shape in shapes]
  table = factors[0] if len(factors) == 1 else np.linalg.multi_dot(factors)
  u, s, vt = analysis.factored_svd(factors)
  np.testing.assert_allclose((u * s) @ vt, table, atol=1e-10)
  np.testing.assert_allclose(u.T @ u, np.eye(s.size), atol=1e-10)
  np.testing.assert_allclose(vt @ vt.T, np.eye(s.size), atol=1e-10)
  np.testing.assert_allclose(s, np.linalg.svd(table, compute_uv=False)[:s.size], rtol=1e-10)
  np.testing.assert_allclose(s, np.asarray(spectrum.singular_values(factors))[:s.size],
                             rtol=1e-4)
  largest = u[np.argmax(np.abs(u), axis=0), np.arange(s.size)]
  assert np.all(largest > 0)


def test_spectrum_table_and_energy_ranks():
  sv = np.sqrt([50.0, 30.0, 10.0, 9.0, 1.0])  # energy 0.5, 0.8, 0.9, 0.99, 1.0
  table = analysis.spectrum_table({'w': sv})
  row = table.loc['w']
  assert analysis.energy_column(0.9) == 'rank_90' and analysis.energy_column(0.99) == 'rank_99'
  assert row['rank_90'] == 3 and row['rank_99'] == 4
  assert row['singular_values'] == 5
  np.testing.assert_allclose(row['stable_rank'], 2.0)
  np.testing.assert_allclose(row['entropy_effective_rank'], spectrum.entropy_effective_rank(sv))


def test_svd_parameter_cost_matches_costs_py():
  config = brown.get_config('runlocal,kind=svd')
  vocab, dim = 100, config.model.model_dim
  cost = analysis.svd_parameter_cost(vocab, dim, [4, 8])
  for _, row in cost.iterrows():
    config.model.embed.rank = int(row['rank'])
    assert row['svd_params'] == costs.param_counts(config, vocab)['embedding']
    assert row['dense_params'] == vocab * dim


def test_pareto_front_keeps_the_undominated_points():
  table = pd.DataFrame({'p': [10, 20, 30, 40, 15], 'ppl': [90.0, 80.0, 85.0, 70.0, 95.0]})
  front = analysis.pareto_front(table, 'p', 'ppl')
  assert list(front['p']) == [10, 20, 40]


def test_neighbours_under_a_rank_r_truncation_are_those_of_w_r(embeddings):
  embedding = embeddings['dense']
  u, s, vt = embedding.svd
  w4_VxD = (u[:, :4] * s[:4]) @ vt[:4]
  queries = [2, 3, 5]
  via_factors = analysis.nearest_neighbours(analysis.rank_vectors(embedding, 4), queries, 5)
  explicit = analysis.nearest_neighbours(w4_VxD, queries, 5)
  for a, b in zip(via_factors, explicit, strict=True):
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([x for _, x in a], [x for _, x in b], atol=1e-10)
  with pytest.raises(ValueError, match=r'rank=17 must lie in \[1, 16\]'):
    analysis.rank_vectors(embedding, 17)


def test_nearest_neighbours_by_cosine():
  vectors = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])
  (first,) = analysis.nearest_neighbours(vectors, [0], count=3)
  assert [i for i, _ in first] == [1, 2, 3]
  np.testing.assert_allclose(first[2][1], -1.0)


def test_interpretation_tables(embeddings):
  embedding = embeddings['dense']
  words = analysis.frequent_words(embedding, count=3)
  counts, tokenizer = embedding.token_counts_V, embedding.tokenizer
  word_counts = sorted((c for i, c in enumerate(counts) if tokenizer.id_to_token(i)[0] == 'w'),
                       reverse=True)
  assert [counts[tokenizer.token_to_id(w)] for w in words] == word_counts[:3]
  assert words[0] == 'w0'  # the generated corpus is Zipf over w0, w1, ...
  assert analysis.frequent_words(embedding, count=2, skip=1) == words[1:]
  tops = analysis.top_tokens(embedding, directions=3, count=4)
  assert list(tops.index) == [1, 2, 3]
  u, s, _ = embedding.svd
  np.testing.assert_allclose(tops['singular_value'], s[:3])
  first = embedding.tokenizer.id_to_token(int(np.argmax(np.abs(u[:, 0]))))
  assert tops.loc[1, 'tokens'].startswith(f'{first} (+')
  table = analysis.neighbours_table(embedding, words, ranks=(None, 16, 2), count=3)
  assert list(table.columns) == ['full', 'rank 16', 'rank 2']
  assert (table['full'] == table['rank 16']).all()  # rank K = the embedding itself
  assert all(len(cell.split(', ')) == 3 for cell in table['rank 2'])
  overlap = analysis.neighbour_overlap(embedding, words, ranks=[1, 16], count=3)
  assert list(overlap.columns) == [*words, 'mean'] and list(overlap.index) == [1, 16]
  assert (overlap.loc[16] == 1.0).all()
  full = [set(c.split(', ')) for c in table['full']]
  kept = [len(f & set(c.split(', '))) / 3 for f, c in zip(full, table['rank 2'], strict=True)]
  np.testing.assert_allclose(
      analysis.neighbour_overlap(embedding, words, [2], count=3).loc[2, words], kept)


SUMMARY_CSV = """\
run,kind,head,rank,seed,embedding_params,vocab_params,total_params,valid_ppl,test_ppl,tokens_per_s
dense,dense,tied,,0,1000,1000,2000,50.0,52.0,1000.0
albert_rank4,albert,tied,4,0,320,400,1400,65.0,66.0,
svd_rank4,svd,tied,4,0,300,300,1300,70.0,72.0,
svd_rank8,svd,tied,8,0,600,600,1600,60.0,61.0,
svd_rank4_untied,svd,untied,4,0,300,1300,2300,68.0,69.0,
dense,posthoc_svd,tied,4,0,300,300,1300,,90.0,
dense,posthoc_svd,tied,8,0,600,600,1600,,70.0,
dense,posthoc_svd_ft10,tied,4,0,300,300,1300,,80.0,
dense,posthoc_svd_ft10,tied,8,0,600,600,1600,,65.0,
"""


@pytest.fixture
def fake_sweep(tmp_path):
  """A sweep directory as sweep_report and eval.py --svd_ranks=4,8 leave it (numbers made up)."""
  (tmp_path / 'summary.csv').write_text(SUMMARY_CSV)
  (tmp_path / 'dense').mkdir()
  record = {'split': 'test', 'dense_ppl': 52.5, 'ppl_by_rank': {'8': 70.0, '4': 90.0},
            'finetune_steps': 10, 'finetuned_ppl_by_rank': {'8': 65.0, '4': 80.0}}
  (tmp_path / 'dense' / 'posthoc_svd_test.json').write_text(json.dumps(record))
  return tmp_path


def test_load_sweep_table_and_posthoc_svd(fake_sweep, tmp_path_factory):
  table = analysis.load_sweep_table(fake_sweep)
  assert list(table.columns) == [*sweep_report.COLUMNS, 'series']
  assert str(table['rank'].dtype) == 'Int64' and pd.isna(table.loc[0, 'rank'])
  assert list(table['series']) == ['dense', 'albert', 'svd', 'svd', 'svd_untied',
                                   'posthoc_svd', 'posthoc_svd', 'posthoc_svd_ft10',
                                   'posthoc_svd_ft10']
  assert list(analysis.trained_points(table)['run']) == [
      'dense', 'albert_rank4', 'svd_rank4', 'svd_rank8', 'svd_rank4_untied']
  posthoc = analysis.load_posthoc_svd(fake_sweep)
  assert posthoc.to_dict('list') == {
      'run': ['dense'] * 4, 'split': ['test'] * 4, 'rank': [4, 8, 4, 8],
      'finetune_steps': [0, 0, 10, 10], 'ppl': [90.0, 70.0, 80.0, 65.0], 'dense_ppl': [52.5] * 4}
  empty = tmp_path_factory.mktemp('empty')
  assert analysis.load_posthoc_svd(empty).empty
  with pytest.raises(FileNotFoundError, match='run the sweep first.*FACTORIZED_SWEEP_DIR'):
    analysis.load_sweep_table(empty)


def test_repo_path_finds_the_repository_from_anywhere(repo_root, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert analysis.repo_path('configs/brown.py') == str(repo_root / 'configs/brown.py')
  (tmp_path / 'here').mkdir()
  assert analysis.repo_path('here') == 'here'
  assert analysis.repo_path('/abs/x') == '/abs/x'


def test_truncation_table(embeddings, fake_sweep):
  embedding = embeddings['dense']  # named 'dense', as the fake sweep's post-hoc run
  sv = embedding.singular_values()
  table = analysis.truncation_table(embedding, [8, 4, 16], analysis.load_posthoc_svd(fake_sweep))
  assert list(table.index) == [4, 8, 16]
  np.testing.assert_allclose(table['energy'], spectrum.cumulative_energy(sv)[[3, 7, 15]])
  np.testing.assert_allclose(table['relative_error'], analysis.reconstruction_error(sv, [4, 8, 16]))
  assert list(table['svd_params']) == [r * (embedding.vocab_size + 17) for r in (4, 8, 16)]
  assert table['test_ppl'].tolist()[:2] == [90.0, 70.0] and np.isnan(table.loc[16, 'test_ppl'])
  np.testing.assert_allclose(table.loc[4, 'ppl_increase'], 90.0 / 52.5 - 1)
  assert 'test_ppl' not in analysis.truncation_table(embedding, [4]).columns


def test_every_plot_draws(embeddings, fake_sweep):
  table = analysis.load_sweep_table(fake_sweep)
  posthoc = analysis.load_posthoc_svd(fake_sweep)
  scalars = pd.DataFrame({'run': ['dense', 'dense', 'svd_rank4'], 'tag': ['train/loss'] * 3,
                          'step': [1, 2, 1], 'value': [3.0, 2.0, 3.5], 'wall_time': 0.0})
  sv = embeddings['dense'].singular_values()
  spectra = {'dense': sv, 'svd_rank4': sv[:4], 'svd_rank8': sv[:8], 'albert_rank4': sv[:5]}
  figures = [plots.plot_ppl_vs_rank(table), plots.plot_ppl_vs_params(table),
             plots.plot_training_curves(scalars, table),
             plots.plot_posthoc_vs_scratch(posthoc, table),
             plots.plot_spectra(spectra, reference='dense'),
             plots.plot_reconstruction_error(sv, [4, 8]),
             plots.plot_parameter_cost(analysis.svd_parameter_cost(100, 16, [2, 4, 8]))]
  for fig in figures:
    assert isinstance(fig, Figure) and fig.axes
    assert all(ax.has_data() for ax in fig.axes)
    fig.canvas.draw()
  front = analysis.pareto_front(table, 'vocab_params', 'test_ppl')
  assert list(front['run']) == ['svd_rank4', 'albert_rank4', 'svd_rank8', 'dense']
