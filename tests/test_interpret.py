"""interpret.py: directions, neighbours under truncations, and truncation costs."""

import numpy as np
import pytest

from configs import brown
from factorized.analysis import interpret, readers
from factorized.config import build
from factorized.embeddings import spectrum
from factorized.model import costs


def test_neighbours_under_a_rank_r_truncation_are_those_of_w_r(dense_embedding):
  embedding = dense_embedding
  u, s, vt = embedding.svd
  w4_VxD = (u[:, :4] * s[:4]) @ vt[:4]
  queries = [2, 3, 5]
  via_factors = interpret.nearest_neighbours(interpret.rank_vectors(embedding, 4), queries, 5)
  explicit = interpret.nearest_neighbours(w4_VxD, queries, 5)
  for a, b in zip(via_factors, explicit, strict=True):
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([x for _, x in a], [x for _, x in b], atol=1e-10)
  with pytest.raises(ValueError, match=r'rank=17 must lie in \[1, 16\]'):
    interpret.rank_vectors(embedding, 17)


def test_nearest_neighbours_by_cosine():
  vectors = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])
  (first,) = interpret.nearest_neighbours(vectors, [0], count=3)
  assert [i for i, _ in first] == [1, 2, 3]
  np.testing.assert_allclose(first[2][1], -1.0)


def test_interpretation_tables(dense_embedding):
  embedding = dense_embedding
  words = interpret.frequent_words(embedding, count=3)
  counts, tokenizer = embedding.token_counts_V, embedding.tokenizer
  word_counts = sorted((c for i, c in enumerate(counts) if tokenizer.id_to_token(i)[0] == 'w'),
                       reverse=True)
  assert [counts[tokenizer.token_to_id(w)] for w in words] == word_counts[:3]
  assert words[0] == 'w0'  # the generated corpus is Zipf over w0, w1, ...
  assert interpret.frequent_words(embedding, count=2, skip=1) == words[1:]
  tops = interpret.top_tokens(embedding, directions=3, count=4)
  assert list(tops.index) == [1, 2, 3]
  u, s, _ = embedding.svd
  np.testing.assert_allclose(tops['singular_value'], s[:3])
  first = embedding.tokenizer.id_to_token(int(np.argmax(np.abs(u[:, 0]))))
  assert tops.loc[1, 'tokens'].startswith(f'{first} (+')
  table = interpret.neighbours_table(embedding, words, ranks=(None, 16, 2), count=3)
  assert list(table.columns) == ['full', 'rank 16', 'rank 2']
  assert (table['full'] == table['rank 16']).all()  # rank K = the embedding itself
  assert all(len(cell.split(', ')) == 3 for cell in table['rank 2'])
  overlap = interpret.neighbour_overlap(embedding, words, ranks=[1, 16], count=3)
  assert list(overlap.columns) == [*words, 'mean'] and list(overlap.index) == [1, 16]
  assert (overlap.loc[16] == 1.0).all()
  full = [set(c.split(', ')) for c in table['full']]
  kept = [len(f & set(c.split(', '))) / 3 for f, c in zip(full, table['rank 2'], strict=True)]
  np.testing.assert_allclose(
      interpret.neighbour_overlap(embedding, words, [2], count=3).loc[2, words], kept)


def test_truncation_table(dense_embedding, fake_sweep):
  embedding = dense_embedding  # named 'dense', as the fake sweep's post-hoc run
  sv = embedding.singular_values()
  table = interpret.truncation_table(embedding, [8, 4, 16], readers.load_posthoc_svd(fake_sweep))
  assert list(table.index) == [4, 8, 16]
  np.testing.assert_allclose(table['energy'], spectrum.cumulative_energy(sv)[[3, 7, 15]])
  np.testing.assert_allclose(table['relative_error'], spectrum.reconstruction_error(sv, [4, 8, 16]))
  assert list(table['svd_params']) == [r * (embedding.vocab_size + 17) for r in (4, 8, 16)]
  assert table['test_ppl'].tolist()[:2] == [90.0, 70.0] and np.isnan(table.loc[16, 'test_ppl'])
  np.testing.assert_allclose(table.loc[4, 'ppl_increase'], 90.0 / 52.5 - 1)
  assert 'test_ppl' not in interpret.truncation_table(embedding, [4]).columns


def test_svd_parameter_cost_matches_costs_py():
  config = brown.get_config('runlocal,kind=svd')
  vocab, dim = 100, config.model.model_dim
  cost = interpret.svd_parameter_cost(vocab, dim, [4, 8])
  for _, row in cost.iterrows():
    config.model.embed.rank = int(row['rank'])
    assert row['svd_params'] == costs.param_counts(build.model_args(config, vocab))['embedding']
    assert row['dense_params'] == vocab * dim
