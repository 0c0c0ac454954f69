"""Tests of factorized/embeddings/: shapes, maths, SVD init, scale, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.model import ModelArgs, TransformerLM

# The kinds the tests sweep: (kind, embed overrides).
VARIANTS = [
    ('dense', {}),
    ('albert', {'albert_head': 'mlm'}),
    ('albert', {'albert_head': 'transpose'}),
    ('svd', {}),
    ('svd', {'ortho_penalty': 0.1}),
]


def model_config(kind='dense', rank=8, dim=32, **embed_overrides):
  """config.model of the runlocal config with the embedding fields overridden."""
  config = brown.get_config('runlocal').model
  config.embed.kind, config.embed.rank, config.model_dim = kind, rank, dim
  config.embed.update(embed_overrides)
  return config


def make_embedding(model_config, vocab_size, *, rngs, **kwargs):
  """The embedding module of `model_config` (config.model), validated first."""
  return embeddings.embed_config(model_config, vocab_size).build(rngs, **kwargs)


def make_lm(model_config, vocab_size, seq_len, *, rngs, **kwargs):
  """The TransformerLM of `model_config` (config.model), validated first."""
  return TransformerLM(ModelArgs.from_config(model_config, vocab_size, seq_len), rngs=rngs,
                       **kwargs)


def num_params(module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def table(embed) -> np.ndarray:
  """The VxD table, reconstructed in the test only."""
  product = embed.factors()[0]
  for factor in embed.factors()[1:]:
    product = product @ factor
  return np.asarray(product)


def randomize(module, seed=1):
  """Replaces every parameter by N(0, 1) values, so zero biases and s = 1 hide nothing."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  for _, param in nnx.iter_graph(module):
    if isinstance(param, nnx.Param):
      param[...] = jax.random.normal(next(keys), param.shape)


@pytest.mark.parametrize('vocab,dim,rank', [(50, 16, 4), (37, 24, 24), (200, 32, 7)])
def test_embedding_param_counts_equal_formulas(vocab, dim, rank):
  formulas = {'dense': vocab * dim, 'albert': vocab * rank + rank * dim + dim,
              'svd': vocab * rank + rank + rank * dim}
  for kind, formula in formulas.items():
    # albert_head='transpose' adds no head parameters, so the module is the embedding alone.
    config = model_config(kind, rank, dim, albert_head='transpose')
    embed = make_embedding(config, vocab, rngs=nnx.Rngs(0))
    assert num_params(embed) == formula, kind


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_call_and_attend_equal_products_with_the_table(kind, overrides):
  vocab, dim, rank = 40, 24, 8
  embed = make_embedding(
      model_config(kind, rank, dim, **overrides), vocab, rngs=nnx.Rngs(0))
  randomize(embed)
  ids_BxL = jax.random.randint(jax.random.key(2), (3, 5), 0, vocab)
  x_BxLxD = jax.random.normal(jax.random.key(3), (3, 5, dim))
  table_VxD = table(embed)
  np.testing.assert_allclose(embed(ids_BxL), table_VxD[ids_BxL], atol=1e-5, rtol=1e-5)
  logits = embed.attend(x_BxLxD)
  assert logits.dtype == jnp.float32 and logits.shape == (3, 5, vocab)
  if kind == 'albert':
    a_VxE = np.asarray(embed.A_VxE[...])
    if overrides['albert_head'] == 'mlm':  # dense D->E, gelu, LayerNorm(E), A^T, bias.
      h = np.asarray(x_BxLxD) @ np.asarray(embed.mlm_dense.kernel[...])
      h = np.asarray(jax.nn.gelu(h + np.asarray(embed.mlm_dense.bias[...]), approximate=True))
      h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
      h = h * np.asarray(embed.mlm_norm.scale[...]) + np.asarray(embed.mlm_norm.bias[...])
      expected = h @ a_VxE.T + np.asarray(embed.mlm_bias_V[...])
    else:
      expected = np.asarray(x_BxLxD) @ (a_VxE @ np.asarray(embed.P_ExD[...])).T
  else:
    expected = np.asarray(x_BxLxD) @ table_VxD.T
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_factorized_kinds_never_build_the_vxd_matrix(kind, overrides):
  vocab, dim, rank, seq_len = 50, 24, 8, 6  # All distinct, so shapes are unambiguous.
  model = make_lm(model_config(kind, rank, dim, **overrides), vocab, seq_len,
                        rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  ids_BxL = jnp.zeros((2, seq_len), jnp.int32)

  def loss(params):
    logits = nnx.merge(graphdef, params)(ids_BxL)
    return jnp.mean(jax.nn.logsumexp(logits, -1)) + nnx.merge(graphdef, params).penalty()

  shapes = {tuple(aval.shape) for fn in (loss, jax.grad(loss))
            for aval in _avals(jax.make_jaxpr(fn)(params))}
  built = bool(shapes & {(vocab, dim), (dim, vocab)})
  assert built == (kind == 'dense'), sorted(shapes)


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_embedding_and_logit_scale_match_dense_at_every_rank(kind, overrides):
  """The lookup's std, and the tied logits' std for unit-variance x (the final norm's output)."""
  vocab, dim = 512, 64
  all_ids = jnp.arange(vocab)[None]
  x_BxLxD = jax.random.normal(jax.random.key(0), (4, 16, dim))
  dense = make_embedding(model_config('dense', dim=dim), vocab, rngs=nnx.Rngs(0))
  reference = float(jnp.std(dense(all_ids))), float(jnp.std(dense.attend(x_BxLxD)))
  np.testing.assert_allclose(reference, [dim ** -0.5, 1.0], rtol=0.05)  # sigma^2 = 1/D.
  for rank in (8, 32, 64):
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
    ('tucker', 4, {}, ["model.embed.kind='tucker'", 'dense|albert|svd']),
    ('svd', 4, {'head': 'shared'}, ["model.embed.head='shared'", 'tied|untied']),
    ('albert', 4, {'albert_head': 'x'}, ["model.embed.albert_head='x'", 'mlm|transpose']),
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


def test_dense_rank_is_ignored_and_svd_factors_validate_rank():
  embeddings.embed_config(model_config('dense', rank=0), 100)
  with pytest.raises(ValueError, match='model.embed.rank=9'):
    embeddings.base.truncated_svd(np.ones((8, 4)), 9)
  with pytest.raises(ValueError, match='dense_table has shape'):
    make_embedding(model_config('svd', 4, 16), 10, rngs=nnx.Rngs(0),
                              dense_table=np.ones((10, 8)))
