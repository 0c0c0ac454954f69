"""Tests of factorized/embeddings/: every kind's maths, counts, scale and bad input."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.embeddings import adaptive, tt
from factorized.model.transformer import ModelArgs, TransformerLM

# The kinds the tests sweep: every kind at its defaults, then (kind, embed overrides).
VARIANTS = [(kind, {}) for kind in embeddings.KINDS] + [
    ('albert', {'albert_head': 'transpose'}),
    ('svd', {'ortho_penalty': 0.1}),
    ('adaptive', {'band_cutoffs': (3, 11), 'band_factor': 2.0}),
]


def model_config(kind='dense', rank=8, dim=32, **embed_overrides):
  """config.model of the runlocal config with the embedding fields overridden."""
  config = brown.get_config('runlocal').model
  config.embed.kind, config.embed.rank, config.model_dim = kind, rank, dim
  config.embed.update(embed_overrides)
  return config


def skewed_counts(vocab_size: int, seed: int = 7) -> np.ndarray:
  """Train counts whose frequency order is not the id order."""
  return np.random.default_rng(seed).permutation(np.arange(vocab_size) ** 2 + 1)


def make_embedding(model_config, vocab_size, *, rngs, **kwargs):
  """The embedding module of `model_config` (config.model), validated first."""
  kwargs.setdefault('token_counts', skewed_counts(vocab_size))
  return embeddings.embed_config(model_config, vocab_size).build(rngs, **kwargs)


def make_lm(model_config, vocab_size, seq_len, *, rngs, **kwargs):
  """The TransformerLM of `model_config` (config.model), validated first."""
  kwargs.setdefault('token_counts', skewed_counts(vocab_size))
  return TransformerLM(ModelArgs.from_config(model_config, vocab_size, seq_len), rngs=rngs,
                       **kwargs)


def num_params(module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def product(factors) -> np.ndarray:
  result = np.asarray(factors[0], np.float64)
  for factor in factors[1:]:
    result = result @ np.asarray(factor, np.float64)
  return result


def table(embed) -> np.ndarray:
  """The VxD table from the module's own `factors()` (what spectra read)."""
  return product(embed.factors())


def explicit_table(kind: str, embed, vocab_size: int) -> np.ndarray:
  """The VxD table, reconstructed in the test only from the raw parameters."""
  if kind == 'dense':
    return np.asarray(embed.W_VxD[...], np.float64)
  if kind == 'albert':
    return product([embed.A_VxE[...], embed.P_ExD[...]]) + np.asarray(embed.b_D[...])
  if kind == 'svd':
    return product([np.asarray(embed.U_VxR[...]) * np.asarray(embed.s_R[...]), embed.V_RxD[...]])
  if kind == 'adaptive':  # band b: the next V_b ids in train-frequency order, rows A_b P_b
    order = np.argsort(-skewed_counts(vocab_size), kind='stable')
    bands = [product([a[...], p[...]]) for a, p in zip(embed.A_VbxWb, embed.P_WbxD, strict=True)]
    result = np.zeros((vocab_size, bands[0].shape[1]))
    result[order] = np.concatenate(bands)
    return result
  if kind == 'tt':  # contract every core, then order the axes (v_1..v_n, d_1..d_n)
    cores = [np.asarray(core[...], np.float64) for core in embed.G_RxVkxDkxR]
    full = cores[0][0]
    for core in cores[1:]:
      full = np.tensordot(full, core, axes=([-1], [0]))
    full = full[..., 0]
    n = len(cores)
    full = full.transpose([2 * k for k in range(n)] + [2 * k + 1 for k in range(n)])
    vocab_padded = math.prod(full.shape[:n])
    return full.reshape(vocab_padded, -1)[:vocab_size]
  if kind == 'dpq':  # each group's codeword of largest <query, key>, from the value codebook
    groups = embed.groups
    q_VxGxS = np.asarray(embed.query_VxD[...]).reshape(vocab_size, groups, -1)
    keys_KxGxS = np.asarray(embed.keys_KxD[...]).reshape(-1, groups, q_VxGxS.shape[2])
    codes_VxG = np.einsum('vgs,kgs->vgk', q_VxGxS, keys_KxGxS).argmax(-1)
    values_KxGxS = np.asarray(embed.values_KxD[...], np.float64).reshape(keys_KxGxS.shape)
    return values_KxGxS[codes_VxG, np.arange(groups)].reshape(vocab_size, -1)
  raise KeyError(f'no explicit table for kind {kind!r}: add one here')


def randomize(module, seed=1):
  """Replaces every parameter by N(0, 1) values, so zero biases and s = 1 hide nothing."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  for _, param in nnx.iter_graph(module):
    if isinstance(param, nnx.Param):
      param[...] = jax.random.normal(next(keys), param.shape)


def bands(vocab, rank, cutoffs, factor=4.0):
  """(size, width) of each adaptive band, from the docstring's rule."""
  edges = (0, *cutoffs, vocab)
  return [(hi - lo, max(1, int(rank // factor ** b)))
          for b, (lo, hi) in enumerate(itertools.pairwise(edges))]


def tt_bonds(vocab_factors, dim_factors, rank):
  sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
  return [1] + [min(rank, math.prod(sizes[:k]), math.prod(sizes[k:]))
                for k in range(1, len(sizes))] + [1]


@pytest.mark.parametrize('vocab,dim,rank', [(50, 16, 4), (37, 24, 24), (200, 32, 7)])
def test_embedding_param_counts_equal_formulas_and_the_built_module(vocab, dim, rank):
  tt_factors = {50: (4, 4, 4), 37: (4, 4, 3), 200: (6, 6, 6)}[vocab]
  dim_factors = {16: (2, 2, 4), 24: (2, 3, 4), 32: (2, 4, 4)}[dim]
  tt_rank = min(rank, 6)  # below every cut's size
  bonds = tt_bonds(tt_factors, dim_factors, tt_rank)
  formulas = {
      'dense': vocab * dim, 'albert': vocab * rank + rank * dim + dim,
      'svd': vocab * rank + rank + rank * dim,
      'adaptive': sum(size * width + width * dim for size, width in bands(vocab, rank, (5, 20))),
      'tt': sum(bonds[k] * v * d * bonds[k + 1]
                for k, (v, d) in enumerate(zip(tt_factors, dim_factors, strict=True))),
      'dpq': rank * dim}  # the value codebooks; the codes are integers
  training_only = {'dpq': vocab * dim + rank * dim}  # Q and the key codebooks
  assert set(formulas) == set(embeddings.KINDS)
  overrides = {'albert_head': 'transpose',  # a head that adds no parameters
               'band_cutoffs': (5, 20), 'tt_vocab_factors': tt_factors,
               'tt_dim_factors': dim_factors}
  for kind, formula in formulas.items():
    config = model_config(kind, tt_rank if kind == 'tt' else rank, dim, **overrides)
    embed = make_embedding(config, vocab, rngs=nnx.Rngs(0))
    assert num_params(embed) == formula + training_only.get(kind, 0), kind
    config = embeddings.embed_config(config, vocab)
    assert config.param_counts() == {'embedding': formula, 'tied_head': 0}, kind
    assert config.training_params() == training_only.get(kind, 0), kind


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_call_and_attend_equal_products_with_the_table(kind, overrides):
  vocab, dim, rank = 40, 24, 8
  embed = make_embedding(
      model_config(kind, rank, dim, **overrides), vocab, rngs=nnx.Rngs(0))
  randomize(embed)
  ids_BxL = jax.random.randint(jax.random.key(2), (3, 5), 0, vocab)
  x_BxLxD = jax.random.normal(jax.random.key(3), (3, 5, dim))
  table_VxD = explicit_table(kind, embed, vocab)
  np.testing.assert_allclose(embed(ids_BxL), table_VxD[ids_BxL], atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(table(embed), table_VxD, atol=1e-4, rtol=1e-5)  # factors()
  logits = embed.attend(x_BxLxD)
  assert logits.dtype == jnp.float32 and logits.shape == (3, 5, vocab)
  if kind == 'albert' and overrides.get('albert_head', 'mlm') == 'mlm':
    # dense D->E, gelu, LayerNorm(E), A^T, bias.
    h = np.asarray(x_BxLxD) @ np.asarray(embed.mlm_dense.kernel[...])
    h = np.asarray(jax.nn.gelu(h + np.asarray(embed.mlm_dense.bias[...]), approximate=True))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
    h = h * np.asarray(embed.mlm_norm.scale[...]) + np.asarray(embed.mlm_norm.bias[...])
    expected = h @ np.asarray(embed.A_VxE[...]).T + np.asarray(embed.mlm_bias_V[...])
  elif kind == 'albert':  # x P^T A^T: the table without its bias
    expected = np.asarray(x_BxLxD) @ (table_VxD - np.asarray(embed.b_D[...])).T
  else:
    expected = np.asarray(x_BxLxD) @ table_VxD.T
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-5)


def test_svd_at_full_rank_from_a_dense_table_reproduces_the_dense_model():
  vocab, dim, seq_len = 30, 16, 6
  dense = make_lm(model_config('dense', dim=dim), vocab, seq_len, rngs=nnx.Rngs(0))
  table_VxD = dense.embed.W_VxD[...]
  svd = make_lm(model_config('svd', rank=dim, dim=dim), vocab, seq_len,
                      rngs=nnx.Rngs(1), dense_table=table_VxD)
  nnx.update(svd.blocks, nnx.state(dense.blocks))
  nnx.update(svd.final_norm, nnx.state(dense.final_norm))
  ids_BxL = jax.random.randint(jax.random.key(2), (2, seq_len), 0, vocab)
  np.testing.assert_allclose(svd.embed(ids_BxL), dense.embed(ids_BxL), atol=1e-5)
  np.testing.assert_allclose(svd(ids_BxL), dense(ids_BxL), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('rank', [1, 5, 12])
def test_truncated_svd_init_is_the_best_rank_r_approximation(rank):
  vocab, dim = 30, 16
  table_VxD = np.random.default_rng(0).normal(size=(vocab, dim))
  embed = make_embedding(
      model_config('svd', rank, dim), vocab, rngs=nnx.Rngs(0), dense_table=table_VxD)
  u, s, vt = np.linalg.svd(table_VxD, full_matrices=False)
  best_VxD = (u[:, :rank] * s[:rank]) @ vt[:rank]  # Eckart-Young.
  np.testing.assert_allclose(table(embed), best_VxD, atol=1e-5)
  # Split so that Adam's first step moves U, s and V terms equally (see embeddings.py).
  c = np.cbrt(vocab * dim * s[:rank] ** 4)
  u_norm = np.linalg.norm(embed.U_VxR[...], axis=0)
  v_norm = np.linalg.norm(embed.V_RxD[...], axis=1)
  s_R = np.asarray(embed.s_R[...])
  for term in (vocab * (v_norm * s_R) ** 2, dim * (u_norm * s_R) ** 2, (u_norm * v_norm) ** 2):
    np.testing.assert_allclose(term, c, rtol=1e-4)
  residual = np.sum((table_VxD - table(embed)) ** 2)
  np.testing.assert_allclose(residual, np.sum(s[rank:] ** 2), rtol=1e-4, atol=1e-5)


def _avals(jaxpr):
  """Every intermediate aval of a (closed) jaxpr, sub-jaxprs included."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  for eqn in jaxpr.eqns:
    yield from (v.aval for v in eqn.outvars)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if hasattr(sub, 'eqns') or hasattr(sub, 'jaxpr'):
          yield from _avals(sub)


# Kinds whose tied head builds the VxD table (dpq's of codebook rows, from a VxD query table).
BUILD_TABLE = ('dense', 'dpq')


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_factorized_kinds_never_build_the_vxd_matrix(kind, overrides):
  # All distinct, so shapes are unambiguous; V D above every block matrix (24 x 72).
  vocab, dim, rank, batch, seq_len = 130, 24, 8, 2, 6
  model = make_lm(model_config(kind, rank, dim, **overrides), vocab, seq_len, rngs=nnx.Rngs(0))
  graphdef, params, consts = nnx.split(model, nnx.Param, ...)
  ids_BxL = jnp.zeros((batch, seq_len), jnp.int32)

  def loss(params):
    model = nnx.merge(graphdef, params, consts)
    return jnp.mean(jax.nn.logsumexp(model(ids_BxL), -1)) + model.penalty()

  shapes = {tuple(aval.shape) for fn in (loss, jax.grad(loss))
            for aval in _avals(jax.make_jaxpr(fn)(params))}
  built = bool(shapes & {(vocab, dim), (dim, vocab)})
  assert built == (kind in BUILD_TABLE), sorted(shapes)
  # Nor anything else as large as the table, but per-token values (logits and the like).
  large = [shape for shape in shapes if math.prod(shape) >= vocab * dim
           and shape[0] not in (batch, batch * seq_len)]
  assert bool(large) == (kind in BUILD_TABLE), large


RANKS = {'tt': (4, 8, 16)}  # a TT-rank must stay below the cut sizes (32 at V=512, D=64)


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_embedding_and_logit_scale_match_dense_at_every_rank(kind, overrides):
  """The lookup's std, and the tied logits' std for unit-variance x (the final norm's output)."""
  vocab, dim = 512, 64
  all_ids = jnp.arange(vocab)[None]
  x_BxLxD = jax.random.normal(jax.random.key(0), (8, 32, dim))
  dense = make_embedding(model_config('dense', dim=dim), vocab, rngs=nnx.Rngs(0))
  reference = float(jnp.std(dense(all_ids))), float(jnp.std(dense.attend(x_BxLxD)))
  np.testing.assert_allclose(reference, [dim ** -0.5, 1.0], rtol=0.05)  # sigma^2 = 1/D.
  for rank in RANKS.get(kind, (8, 32, 64)):
    embed = make_embedding(
        model_config(kind, rank, dim, **overrides), vocab, rngs=nnx.Rngs(rank))
    stds = float(jnp.std(embed(all_ids))), float(jnp.std(embed.attend(x_BxLxD)))
    np.testing.assert_allclose(stds, reference, rtol=0.15, err_msg=f'{kind} rank {rank}')


def test_penalty_is_zero_unless_svd_with_lambda():
  vocab, dim = 40, 16
  for kind, overrides in VARIANTS:
    embed = make_embedding(
        model_config(kind, 8, dim, **overrides), vocab, rngs=nnx.Rngs(0))
    assert embed.penalty().dtype == jnp.float32
    np.testing.assert_allclose(embed.penalty(), 0.0, atol=1e-4)  # Orthonormal init when lambda>0.
  embed = make_embedding(
      model_config('svd', 8, dim, ortho_penalty=0.5), vocab, rngs=nnx.Rngs(0))
  randomize(embed)
  u_VxR, v_RxD, eye = np.asarray(embed.U_VxR[...]), np.asarray(embed.V_RxD[...]), np.eye(8)
  q_VxR = u_VxR * np.sqrt(8 / vocab)  # U = sqrt(V/R) Q: the penalty holds Q orthonormal
  expected = 0.5 * (np.sum((q_VxR.T @ q_VxR - eye) ** 2) + np.sum((v_RxD @ v_RxD.T - eye) ** 2))
  np.testing.assert_allclose(embed.penalty(), expected, rtol=1e-5)


BAD_CONFIGS = [  # (kind, rank, field override, words the message must contain)
    ('svd', 0, {}, ['model.embed.rank=0', '[1, ']),
    ('albert', -3, {}, ['model.embed.rank=-3', '[1, ']),
    ('svd', 17, {}, ['model.embed.rank=17', 'min(vocab_size, model_dim)=16']),
    ('svd', 11, {'vocab': 10}, ['model.embed.rank=11', 'min(vocab_size, model_dim)=10']),
    ('albert', 17, {}, ['model.embed.rank=17', 'model_dim=16']),
    ('tucker', 4, {}, ["model.embed.kind='tucker'", '|'.join(embeddings.KINDS)]),
    ('svd', 4, {'head': 'shared'}, ["model.embed.head='shared'", 'tied|untied']),
    ('albert', 4, {'albert_head': 'x'}, ["model.embed.albert_head='x'", 'mlm|transpose']),
    ('adaptive', 17, {}, ['model.embed.rank=17', 'model_dim=16']),
    ('adaptive', 4, {'band_cutoffs': (20, 10)}, ['model.embed.band_cutoffs=(20, 10)',
                                                 'increasing', '[1, 99]']),
    ('adaptive', 4, {'band_cutoffs': (10, 100)}, ['model.embed.band_cutoffs=(10, 100)',
                                                  '[1, 99]']),
    ('adaptive', 4, {'band_cutoffs': (10, 'x')}, ['model.embed.band_cutoffs=', 'integers']),
    ('adaptive', 4, {'band_factor': 0.5}, ['model.embed.band_factor=0.5', '>= 1']),
    ('adaptive', 4, {'band_widths': (4, 2)}, ['model.embed.band_widths=(4, 2)', '3 widths']),
    ('tt', 4, {'tt_vocab_factors': (4, 4, 6)}, ['model.embed.tt_vocab_factors=(4, 4, 6)',
                                                 'at least vocab_size=100', 'give 96']),
    ('tt', 4, {'tt_dim_factors': (2, 2, 2)}, ['model.embed.tt_dim_factors=(2, 2, 2)',
                                               'model.model_dim=16', 'give 8']),
    ('tt', 4, {'tt_vocab_factors': (10, 10), 'tt_dim_factors': (2, 2, 4)},
     ['tt_vocab_factors=(10, 10)', 'same length']),
    ('tt', 0, {}, ['model.embed.rank=0', 'integer >= 1']),
    ('tt', 40, {}, ['model.embed.rank=40', 'block as large as the table', '< 16']),
    ('dpq', 1, {}, ['model.embed.rank=1', '[2, vocab_size=100]']),
    ('dpq', 4, {'dpq_groups': 3}, ['model.embed.dpq_groups=3', 'model.model_dim=16']),
    ('dpq', 4, {'dpq_temperature': 0.0}, ['model.embed.dpq_temperature=0.0', '> 0']),
]


@pytest.mark.parametrize('kind,rank,override,words', BAD_CONFIGS)
def test_bad_config_raises_before_any_parameter(kind, rank, override, words):
  override = dict(override)
  vocab = override.pop('vocab', 100)
  config = model_config(kind, rank, dim=16, **override)
  for build in (lambda rngs: make_embedding(config, vocab, rngs=rngs),
                lambda rngs: make_lm(config, vocab, 8, rngs=rngs)):
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError) as error:
      build(rngs)
    for word in words:
      assert word in str(error.value)
    assert int(rngs.params.count[...]) == 0  # No parameter was drawn.


def test_dense_rank_is_ignored_and_dense_tables_are_checked():
  embeddings.embed_config(model_config('dense', rank=0), 100)
  with pytest.raises(ValueError, match='model.embed.rank=9'):
    embeddings.base.truncated_svd(np.ones((8, 4)), 9)
  with pytest.raises(ValueError, match='dense_table has shape'):
    make_embedding(model_config('svd', 4, 16), 10, rngs=nnx.Rngs(0),
                   dense_table=np.ones((10, 8)))
  for kind in ('albert', 'tt', 'dpq'):
    with pytest.raises(ValueError, match=f"dense_table initialisation .* not '{kind}'"):
      make_embedding(model_config(kind, 4, 16), 10, rngs=nnx.Rngs(0),
                     dense_table=np.ones((10, 16)))


def test_adaptive_bands_follow_the_train_frequency_order():
  vocab, dim = 300, 16
  counts = skewed_counts(vocab)
  config = embeddings.embed_config(model_config('adaptive', 16, dim), vocab)
  # Baevski & Auli's WikiText-103 cutoffs (20k, 60k of 267,735 words) scaled to V.
  assert config.band_sizes == (22, 45, 233) and config.widths == (16, 4, 1)
  assert adaptive.default_cutoffs(17906) == (1338, 4013)
  embed = config.build(nnx.Rngs(0), token_counts=counts)
  order = np.argsort(-counts, kind='stable')
  np.testing.assert_array_equal(np.asarray(embed.position_V[...])[order], np.arange(vocab))
  # The most frequent ids get the widest rows, the rarest the narrowest.
  rows = explicit_table('adaptive', embed, vocab)
  assert np.linalg.matrix_rank(rows[order[:22]]) == 16
  assert np.linalg.matrix_rank(rows[order[67:]]) == 1
  with pytest.raises(ValueError, match="kind='adaptive' needs the train split's count"):
    config.build(nnx.Rngs(0))
  explicit = embeddings.embed_config(model_config('adaptive', 16, dim, band_cutoffs=(50,),
                                                  band_widths=(3, 9)), vocab)
  assert explicit.band_sizes == (50, 250) and explicit.widths == (3, 9)


def test_adaptive_from_a_dense_table_truncates_each_band():
  vocab, dim = 60, 12
  table_VxD = np.random.default_rng(0).normal(size=(vocab, dim))
  config = model_config('adaptive', 6, dim, band_cutoffs=(10, 30), band_widths=(6, 3, 2))
  embed = make_embedding(config, vocab, rngs=nnx.Rngs(0), dense_table=table_VxD)
  order = np.argsort(-skewed_counts(vocab), kind='stable')
  got = table(embed)
  for (lo, hi), width in zip([(0, 10), (10, 30), (30, 60)], (6, 3, 2), strict=True):
    u, s, vt = np.linalg.svd(table_VxD[order[lo:hi]], full_matrices=False)
    np.testing.assert_allclose(got[order[lo:hi]], (u[:, :width] * s[:width]) @ vt[:width],
                               atol=1e-5)


def test_tt_auto_factors_and_bonds():
  assert tt.auto_vocab_factors(17906, 3) == (27, 26, 26)  # 18,252 >= 17,906
  assert tt.auto_vocab_factors(2000, 3) == (13, 13, 12)
  assert tt.auto_vocab_factors(64, 3) == (4, 4, 4)
  assert tt.auto_dim_factors(128, 3) == (4, 4, 8)
  assert tt.auto_dim_factors(24, 3) == (2, 3, 4)
  assert tt.auto_dim_factors(37, 3) == (1, 1, 37)
  config = embeddings.embed_config(model_config('tt', 64, 128), 17906)
  assert (config.vocab_factors, config.dim_factors) == ((27, 26, 26), (4, 4, 8))
  config = embeddings.embed_config(model_config('tt', 30, 16, tt_dim_factors=(4, 4)), 100)
  assert config.vocab_factors == (10, 10) and config.bonds == (30,)  # 2 cores from the dims
  # Bonds never exceed a cut's size (m_1 = 8 here), where more would add nothing.
  config = embeddings.embed_config(model_config('tt', 12, 24, tt_vocab_factors=(4, 4, 4)), 50)
  assert config.dim_factors == (2, 3, 4) and config.bonds == (8, 12)


def test_tt_head_is_the_same_for_every_cut_and_slice_size_and_the_smallest_bond_is_chosen():
  vocab, dim, rank = 50, 24, 3
  vocab_factors, dim_factors = (2, 3, 3, 3), (1, 2, 3, 4)
  sizes = [v * d for v, d in zip(vocab_factors, dim_factors, strict=True)]
  config = embeddings.embed_config(model_config(
      'tt', rank, dim, tt_vocab_factors=vocab_factors, tt_dim_factors=dim_factors), vocab)
  x_BxLxD = jax.random.normal(jax.random.key(3), (2, 5, dim))

  def build(cut, slice_elements):
    return tt.TTEmbedding(vocab, vocab_factors, dim_factors, config.bonds, cut,
                          dtype='float32', rngs=nnx.Rngs(0), slice_elements=slice_elements)

  def gradients(embed):
    graphdef, params = nnx.split(embed)
    return jax.grad(lambda x, params: jnp.sum(jnp.sin(nnx.merge(graphdef, params).attend(x))),
                    argnums=(0, 1))(x_BxLxD, params)

  def table_from_cores(cores):  # the TT product of the 4 cores, written out (ids, coords)
    full = jnp.einsum('xiaq,qjbr,rkcs,sldy->ijklabcd', *cores)
    return full.reshape(math.prod(vocab_factors), dim)[:vocab]

  explicit_graphdef, explicit_params = nnx.split(build(1, 1))
  explicit = jax.grad(lambda x, params: jnp.sum(jnp.sin(x @ table_from_cores(
      [core[...] for core in nnx.merge(explicit_graphdef, params).G_RxVkxDkxR]).T)),
                      argnums=(0, 1))(x_BxLxD, explicit_params)
  expected = np.asarray(x_BxLxD) @ explicit_table('tt', build(1, 1), vocab).T
  for cut in (1, 2, 3):
    # The most a slice may hold (half the table) and one table row per slice (the padding
    # left out): the same logits; under jax.checkpoint, the same gradients.
    widest = build(cut, vocab * dim)
    (vocab_left, *_), (_, vocab_right, _) = (block.shape for block in widest.blocks())
    spans = widest.slices(vocab_left, vocab_right)
    assert max(rows * columns for _, rows, _, columns in spans) * dim <= vocab * dim / 2
    reference = gradients(widest)
    # The same gradients as autodiff through the explicit VxD table (the cores are the
    # same whatever the cut).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                 reference, explicit)
    for embed in (widest, build(cut, 1)):  # (the default, at this size, is the widest)
      np.testing.assert_allclose(embed.attend(x_BxLxD), expected, atol=1e-5, err_msg=str(cut))
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                   gradients(embed), reference)
  # The plan takes the smallest bond whose blocks stay below the table.
  allowed = [k for k in (1, 2, 3) if config.bonds[k - 1] < min(math.prod(sizes[:k]),
                                                              math.prod(sizes[k:]))]
  assert config.cut in allowed
  assert config.bonds[config.cut - 1] == min(config.bonds[k - 1] for k in allowed)
