r"""Interpreting a trained embedding: its top singular directions, nearest neighbours under
it and under its rank-R truncations, and what truncating it keeps and costs.

Shapes: V vocabulary, D model width, K the number of singular values, R a truncation rank.

W = U diag(s) Vt (its thin SVD, from the factors: readers.TrainedEmbedding.svd), W_R its
rank-R truncation (the best rank-R approximation, Eckart-Young). Rows of W_R are rows of
U_R diag(s_R) times Vt_R, whose rows are orthonormal, so cosine similarities under W_R are
those of U_R diag(s_R): no VxD matrix is formed for a factorized kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from jax.typing import ArrayLike

from factorized import embeddings
from factorized.analysis import table as sweep_table
from factorized.analysis.readers import TrainedEmbedding
from factorized.data import tokenizer as tokenizer_lib
from factorized.embeddings import spectrum


def frequent_words(embedding: TrainedEmbedding, count: int = 6, skip: int = 0) -> list[str]:
  """The `count` most frequent alphabetic train tokens after the first `skip` of them
  (special tokens and punctuation are left out)."""
  tokenizer = embedding.tokenizer
  words = []
  for token_id in np.argsort(-embedding.token_counts_V, kind='stable'):
    token = tokenizer.id_to_token(int(token_id))
    if token not in tokenizer_lib.SPECIALS and any(c.isalpha() for c in token):
      words.append(token)
    if len(words) == skip + count:
      break
  return words[skip:]


def top_tokens(embedding: TrainedEmbedding, directions: int = 8, count: int = 8) -> pd.DataFrame:
  """For each of the top `directions` singular directions: its singular value and the `count`
  tokens with the largest |U| entries, as 'token (+0.123)' in order of |U|."""
  u_VxK, s_K, _ = embedding.svd
  rows = []
  for direction in range(min(directions, s_K.size)):
    column_V = u_VxK[:, direction]
    order = np.argsort(-np.abs(column_V), kind='stable')[:count]
    tokens = ', '.join(f'{embedding.tokenizer.id_to_token(int(i))} ({column_V[i]:+.3f})'
                       for i in order)
    rows.append({'direction': direction + 1, 'singular_value': s_K[direction],
                 'tokens': tokens})
  return pd.DataFrame(rows).set_index('direction')


def nearest_neighbours(vectors_VxK: ArrayLike, query_ids: Sequence[int],
                       count: int = 8) -> list[list[tuple[int, float]]]:
  """For each query row: the `count` other rows of highest cosine similarity, as
  (id, similarity), most similar first."""
  vectors_VxK = np.asarray(vectors_VxK, np.float64)
  norms_V = np.linalg.norm(vectors_VxK, axis=1)
  unit_VxK = vectors_VxK / np.maximum(norms_V, 1e-30)[:, None]
  result = []
  for query in query_ids:
    similarity_V = unit_VxK @ unit_VxK[query]
    similarity_V[query] = -np.inf
    best = np.argsort(-similarity_V, kind='stable')[:count]
    result.append([(int(i), float(similarity_V[i])) for i in best])
  return result


def rank_vectors(embedding: TrainedEmbedding, rank: int | None) -> np.ndarray:
  """U_R diag(s_R) (VxR), whose rows have the cosine similarities of the rank-R truncation
  W_R's rows; rank None keeps every singular value (the embedding itself)."""
  u_VxK, s_K, _ = embedding.svd
  rank = s_K.size if rank is None else rank
  if not 1 <= rank <= s_K.size:
    raise ValueError(f'rank={rank} must lie in [1, {s_K.size}] for {embedding.name}.')
  return u_VxK[:, :rank] * s_K[:rank]


def neighbours_table(embedding: TrainedEmbedding, words: Sequence[str],
                     ranks: Sequence[int | None] = (None,), count: int = 6) -> pd.DataFrame:
  """Nearest neighbours (cosine) of each word under the embedding (rank None: column 'full')
  and under its rank-R truncations (columns 'rank R'), most similar first."""
  ids = [embedding.tokenizer.token_to_id(word) for word in words]
  table = pd.DataFrame(index=pd.Index(list(words), name='word'))
  for rank in ranks:
    found = nearest_neighbours(rank_vectors(embedding, rank), ids, count)
    table['full' if rank is None else f'rank {rank}'] = [
        ', '.join(embedding.tokenizer.id_to_token(i) for i, _ in n) for n in found]
  return table


def neighbour_overlap(embedding: TrainedEmbedding, words: Sequence[str], ranks: Sequence[int],
                      count: int = 10) -> pd.DataFrame:
  """The fraction of each word's `count` nearest neighbours under the full embedding that
  its rank-R truncation keeps: rows rank, columns the words and their mean."""
  ids = [embedding.tokenizer.token_to_id(word) for word in words]
  full = [{i for i, _ in n} for n in nearest_neighbours(rank_vectors(embedding, None), ids,
                                                          count)]
  rows = {}
  for rank in ranks:
    found = nearest_neighbours(rank_vectors(embedding, rank), ids, count)
    rows[rank] = [len(f & {i for i, _ in n}) / count for f, n in zip(full, found, strict=True)]
  table = pd.DataFrame.from_dict(rows, orient='index', columns=list(words))
  table['mean'] = table.mean(axis=1)
  return table.rename_axis('rank')


def truncation_table(embedding: TrainedEmbedding, ranks: Sequence[int],
                     posthoc: pd.DataFrame | None = None, split: str = 'test') -> pd.DataFrame:
  """What truncating the table to each rank R keeps and costs: energy kept, relative error
  |W - W_R|_F / |W|_F, parameters R (V + D + 1) and their fraction of V D, and, from
  `posthoc` (load_posthoc_svd, this run, no fine-tuning), the perplexity on `split` and its
  increase over the untruncated model (NaN where R was not evaluated)."""
  sv = embedding.singular_values()
  ranks = sorted(int(r) for r in ranks)
  energy = spectrum.cumulative_energy(sv)
  table = svd_parameter_cost(embedding.vocab_size, embedding.model_dim, ranks)
  table.insert(1, 'energy', [energy[r - 1] for r in ranks])
  table.insert(2, 'relative_error', spectrum.reconstruction_error(sv, ranks))
  table = table.set_index('rank')
  if posthoc is not None:
    rows = posthoc[(posthoc['run'] == embedding.name) & (posthoc['split'] == split)
                   & (posthoc['method'] == sweep_table.POSTHOC_METHOD)
                   & (posthoc['finetune_steps'] == 0)].set_index('rank')
    table[f'{split}_ppl'] = rows['ppl'].reindex(ranks)
    if not rows.empty:
      table['ppl_increase'] = table[f'{split}_ppl'] / rows['dense_ppl'].iloc[0] - 1
  return table


def svd_parameter_cost(vocab_size: int, model_dim: int, ranks: Sequence[int]) -> pd.DataFrame:
  """Parameters of a rank-R svd embedding (its kind's count, R (V + D + 1)), against the
  dense table's V D: columns rank, svd_params, dense_params, fraction."""
  ranks = np.asarray(ranks, np.int64)
  svd = np.asarray([embeddings.kind('svd')(
      vocab_size=vocab_size, model_dim=model_dim, dtype='float32', tied=True,
      rank=int(rank)).param_counts()['embedding'] for rank in ranks], np.int64)
  dense = vocab_size * model_dim
  return pd.DataFrame({'rank': ranks, 'svd_params': svd, 'dense_params': dense,
                       'fraction': svd / dense})
