"""Tests of factorized/model/costs.py: counts agree with built models, FLOPs with XLA."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.config import build
from factorized.model import costs
from factorized.model import transformer as model_lib

# Explicit adaptive bands and TT factors (V = 1000, D = 32), so the formulas read plainly.
CUTOFFS, TT_VOCAB, TT_DIM = (100, 300), (10, 10, 10), (2, 4, 4)


def make_config(kind, rank, head='tied', albert_head='mlm', positions='rope', dim=32,
                num_layers=1, **embed):
  config = brown.get_config('runlocal')
  config.model.update({'model_dim': dim, 'mlp_dim': 3 * dim, 'num_layers': num_layers,
                       'positions': positions})
  config.model.embed.update({'kind': kind, 'rank': rank, 'head': head,
                             'albert_head': albert_head, **embed})
  return config


def build_model(config, vocab_size, *, rngs):
  return model_lib.TransformerLM(build.model_args(config, vocab_size), rngs=rngs,
                                 token_counts=np.arange(vocab_size, 0, -1))


def adaptive_terms(vocab, dim, rank, cutoffs=CUTOFFS, factor=4):
  """(embedding params, lookup FLOPs, tied-head FLOPs) of adaptive.py's formulas."""
  bands = [(hi - lo, max(1, rank // factor ** b))
           for b, (lo, hi) in enumerate(itertools.pairwise((0, *cutoffs, vocab)))]
  return (sum(n * w + w * dim for n, w in bands), 2 * dim * sum(w for _, w in bands),
          sum(2 * dim * w + 2 * w * n for n, w in bands))


def tt_terms(rank, vocab_factors=TT_VOCAB, dim_factors=TT_DIM, vocab=None):
  """(embedding params, lookup FLOPs, tied-head FLOPs) of tt.py's formulas: the cut of
  smallest bond (then fewest block values) whose blocks stay below the table; the tied
  head multiplies table slices as a dense table (2 D V per token)."""
  sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
  dim, n = math.prod(dim_factors), len(sizes)
  vocab = vocab or math.prod(vocab_factors)
  bonds = [1] + [min(rank, math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, n)] + [1]
  params = sum(bonds[k] * sizes[k] * bonds[k + 1] for k in range(n))
  cut = min((k for k in range(1, n)
             if bonds[k] < min(math.prod(sizes[:k]), math.prod(sizes[k:]))),
            key=lambda k: (bonds[k], bonds[k] * (math.prod(sizes[:k]) + math.prod(sizes[k:]))))
  return params, 2 * dim * bonds[cut], 2 * dim * vocab


def counts_of_built_model(model) -> dict[str, int]:
  """Parameters of a built model, split by where they sit in it."""
  counts = {'embedding': 0, 'output_head': 0, 'blocks': 0, 'other': 0}
  for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    if path[0] == 'embed':
      part = 'output_head' if str(path[1]).startswith('mlm_') else 'embedding'
    else:
      part = {'head': 'output_head', 'blocks': 'blocks'}.get(path[0], 'other')
    counts[part] += param[...].size
  return counts


CASES = [  # (kind, rank, head, albert_head, positions, vocab, dim, num_layers)
    ('dense', 0, 'tied', 'mlm', 'rope', 50, 32, 1),
    ('dense', 0, 'untied', 'mlm', 'learned', 37, 16, 2),
    ('albert', 8, 'tied', 'mlm', 'rope', 50, 32, 1),
    ('albert', 5, 'tied', 'transpose', 'learned', 61, 16, 2),
    ('albert', 16, 'untied', 'mlm', 'rope', 50, 32, 1),
    ('svd', 8, 'tied', 'mlm', 'rope', 50, 32, 2),
    ('svd', 16, 'untied', 'mlm', 'learned', 40, 16, 1),
    ('adaptive', 8, 'tied', 'mlm', 'rope', 50, 32, 1),
    ('adaptive', 16, 'untied', 'mlm', 'learned', 61, 16, 2),
    ('tt', 8, 'tied', 'mlm', 'learned', 50, 32, 2),
    ('tt', 4, 'untied', 'mlm', 'rope', 37, 16, 1),
]


@pytest.mark.parametrize('kind,rank,head,albert_head,positions,vocab,dim,num_layers', CASES)
def test_param_counts_agree_with_the_built_model(kind, rank, head, albert_head, positions,
                                                 vocab, dim, num_layers):
  config = make_config(kind, rank, head, albert_head, positions, dim, num_layers)
  counts = costs.param_counts(build.model_args(config, vocab))
  built = counts_of_built_model(build_model(config, vocab, rngs=nnx.Rngs(0)))
  assert counts['embedding'] == built['embedding']
  assert counts['output_head'] == built['output_head']
  assert counts['blocks'] == built['blocks']
  assert counts['non_embedding'] == built['blocks'] + built['other']
  assert counts['total'] == sum(built.values())
  assert counts['vocab'] == built['embedding'] + built['output_head']


@pytest.mark.parametrize('kind,head,albert_head', [
    ('dense', 'tied', 'mlm'), ('dense', 'untied', 'mlm'), ('albert', 'tied', 'mlm'),
    ('albert', 'tied', 'transpose'), ('albert', 'untied', 'mlm'), ('svd', 'tied', 'mlm'),
    ('svd', 'untied', 'mlm'), ('adaptive', 'tied', 'mlm'), ('adaptive', 'untied', 'mlm'),
    ('tt', 'tied', 'mlm'), ('tt', 'untied', 'mlm'), ('dpq', 'tied', 'mlm'),
    ('dpq', 'untied', 'mlm')])
def test_vocab_params_count_everything_the_embedding_choice_adds(kind, head, albert_head):
  """The budget kinds are compared on: input factors plus head-only parameters (ALBERT's MLM
  head with its V-sized output bias, an untied D x V head)."""
  vocab, dim, rank = 1000, 32, 8
  inputs = {'dense': vocab * dim, 'albert': vocab * rank + rank * dim + dim,
            'svd': vocab * rank + rank + rank * dim,
            'adaptive': adaptive_terms(vocab, dim, rank)[0], 'tt': tt_terms(rank)[0],
            'dpq': rank * dim}[kind]  # dpq: the value codebooks (its codes are integers)
  if head == 'untied':
    head_only = dim * vocab
  elif kind == 'albert' and albert_head == 'mlm':
    head_only = dim * rank + 3 * rank + vocab
  else:
    head_only = 0
  config = make_config(kind, rank, head, albert_head, band_cutoffs=CUTOFFS,
                       tt_vocab_factors=TT_VOCAB, tt_dim_factors=TT_DIM)
  assert costs.param_counts(build.model_args(config, vocab))['vocab'] == inputs + head_only


def test_param_counts_follow_the_formulas():
  vocab, dim, rank, mlp_dim = 1000, 32, 8, 96
  expected_embedding = {'dense': vocab * dim, 'albert': vocab * rank + rank * dim + dim,
                        'svd': vocab * rank + rank + rank * dim}
  per_block = 4 * dim + 4 * dim * dim + 4 * dim + 2 * dim * mlp_dim + mlp_dim + dim
  for kind, embedding in expected_embedding.items():
    tied = costs.param_counts(build.model_args(make_config(kind, rank), vocab))
    untied = costs.param_counts(build.model_args(make_config(kind, rank, head='untied'), vocab))
    assert tied['embedding'] == untied['embedding'] == embedding
    assert tied['blocks'] == per_block
    assert tied['non_embedding'] == per_block + 2 * dim
    mlm = dim * rank + rank + 2 * rank + vocab if kind == 'albert' else 0
    assert tied['output_head'] == mlm
    assert untied['output_head'] == dim * vocab
  transpose = costs.param_counts(
      build.model_args(make_config('albert', rank, albert_head='transpose'), vocab))
  assert transpose['output_head'] == 0


def test_flops_per_token_follow_the_convention():
  vocab, dim, rank, length = 1000, 32, 8, 32  # runlocal: seq_len 32, mlp_dim 3 D here.
  blocks = 2 * dim * 3 * dim + 2 * dim * dim + 4 * length * dim + 4 * dim * 3 * dim
  expected = {
      'dense': (0, 2 * dim * vocab),
      'albert': (2 * rank * dim, 2 * dim * rank + 2 * rank * vocab),
      'svd': (2 * rank * dim, 2 * dim * rank + 2 * rank * vocab),
      'adaptive': adaptive_terms(vocab, dim, rank)[1:],
      'tt': tt_terms(rank)[1:],
      'dpq': (4 * rank * dim, 2 * dim * vocab),  # scores and one-hot values; x W^T
  }
  embed = {'band_cutoffs': CUTOFFS, 'tt_vocab_factors': TT_VOCAB, 'tt_dim_factors': TT_DIM}
  for kind, (embedding, head) in expected.items():
    flops = costs.flops_per_token(build.model_args(make_config(kind, rank, **embed), vocab))
    assert flops == {'embedding': embedding, 'output_head': head, 'blocks': blocks,
                     'total': embedding + head + blocks}, kind
    untied = costs.flops_per_token(
        build.model_args(make_config(kind, rank, head='untied', **embed), vocab))
    assert untied['output_head'] == 2 * dim * vocab


@pytest.mark.parametrize('kind,head', [('dense', 'tied'), ('albert', 'tied'), ('svd', 'untied'),
                                       ('adaptive', 'tied'), ('tt', 'tied')])
def test_flops_per_token_are_close_to_xla_cost_analysis(kind, head):
  """XLA counts the same matmuls plus elementwise work (and tt's per-call core merges and
  table slices, here over few tokens): a few percent more."""
  vocab = 2000
  config = make_config(kind, 16, head, dim=64, num_layers=2)
  graphdef, state = nnx.split(build_model(config, vocab, rngs=nnx.Rngs(0)))
  ids_BxL = jnp.zeros((2, config.data.seq_len), jnp.int32)
  forward = jax.jit(lambda state, ids: nnx.merge(graphdef, state)(ids))
  analysis = forward.lower(state, ids_BxL).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  xla_per_token = analysis['flops'] / ids_BxL.size
  ours = costs.flops_per_token(build.model_args(config, vocab))['total']
  if kind == 'tt':
    ours += embeddings.embed_config(config.model, vocab).table_flops() / ids_BxL.size
  assert ours <= xla_per_token <= 1.1 * ours, (ours, xla_per_token)


def test_costs_validate_the_config():
  with pytest.raises(ValueError, match='model.embed.rank=40'):
    costs.param_counts(build.model_args(make_config('svd', 40), 1000))
  with pytest.raises(ValueError, match="model.embed.kind='lora'"):
    costs.flops_per_token(build.model_args(make_config('lora', 8), 1000))
