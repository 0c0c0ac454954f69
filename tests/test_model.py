"""Tests of factorized/model/transformer.py: causality, gradients, init scale, dropout, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.config import build
from factorized.model import transformer as model_lib
from factorized.model.transformer import ModelArgs

VARIANTS = [(kind, {}) for kind in embeddings.KINDS] + [  # (kind, embed overrides)
    ('albert', {'albert_head': 'transpose'}),
    ('svd', {'ortho_penalty': 0.1}),
]
RANKS = {'tt': (4, 8, 16)}  # TT-ranks below the cut sizes (28 and 24 at V=256, D=64)
# Where a kind's defaults do not suit a tiny model: adaptive's third band would be 1-4 wide
# here, and the logits of a band W_b wide are x along W_b random directions, which one init
# samples too few times for a 15% test (adaptive.py); its 3-band default is tested in
# test_embeddings.py with isotropic x.
SMALL_MODEL = {'adaptive': lambda vocab: {'band_cutoffs': (vocab // 4,), 'band_factor': 2.0}}


def small_model(kind: str, vocab_size: int) -> dict:
  return SMALL_MODEL[kind](vocab_size) if kind in SMALL_MODEL else {}


def build_model(config, vocab_size, *, rngs, ids_BxL=None):
  """The model of `config` with train counts (adaptive's frequency order) that rank the ids of
  `ids_BxL` first, so that every band has a token in the batch."""
  counts = np.arange(vocab_size, 0, -1)
  if ids_BxL is not None:
    counts = counts + vocab_size * np.bincount(np.asarray(ids_BxL).ravel(), minlength=vocab_size)
  return model_lib.TransformerLM(build.model_args(config, vocab_size), rngs=rngs,
                                 token_counts=counts)


def make_config(kind='dense', rank=8, dim=32, seq_len=8, **embed_overrides):
  """The runlocal config, shrunk further, with embedding fields overridden."""
  config = brown.get_config('runlocal')
  config.data.seq_len = seq_len
  config.model.update({'model_dim': dim, 'mlp_dim': 2 * dim})
  config.model.embed.update({'kind': kind, 'rank': rank, **embed_overrides})
  return config


def loss_fn(model, ids_BxL, targets_BxL, **call_kwargs):
  logits = model(ids_BxL, **call_kwargs)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets_BxL).mean() + (
      model.penalty())


@pytest.mark.parametrize('kind,positions', [('dense', 'rope'), ('svd', 'learned'),
                                            ('albert', 'rope')])
def test_causal_position_t_gets_no_gradient_from_later_inputs(kind, positions):
  config = make_config(kind, positions=None)
  config.model.positions = positions
  model = build_model(config, 20, rngs=nnx.Rngs(0))
  ids_BxL = jax.random.randint(jax.random.key(1), (2, 8), 0, 20)
  x_BxLxD = model.embed_tokens(ids_BxL)

  def loss_per_position(x_BxLxD):
    logits = model.decode(x_BxLxD)
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids_BxL).sum(0)  # L

  grads_LxBxLxD = jax.jacrev(loss_per_position)(x_BxLxD)
  norms_LxL = np.asarray(jnp.abs(grads_LxBxLxD).sum((1, 3)))  # [t, s]: d loss_t / d x_s.
  assert np.all(norms_LxL[np.triu_indices(8, 1)] == 0.0)  # Exactly zero for s > t.
  assert np.all(norms_LxL[np.tril_indices(8)] > 0.0)


@pytest.mark.parametrize('head', ['tied', 'untied'])
@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_gradients_are_finite_and_nonzero_for_every_parameter(kind, overrides, head):
  config = make_config(kind, head=head, **overrides)
  config.model.positions = 'learned' if kind == 'svd' else 'rope'
  ids_BxL = jax.random.randint(jax.random.key(1), (2, 8), 0, 20)
  lm = build_model(config, 20, rngs=nnx.Rngs(0), ids_BxL=ids_BxL)
  grads = nnx.grad(lambda lm: loss_fn(lm, ids_BxL, jnp.roll(ids_BxL, -1, 1),
                                      dropout_keys_B=example_keys(2, 2)))(lm)
  for path, grad in nnx.to_flat_state(grads):
    grad = np.asarray(grad[...])
    assert np.all(np.isfinite(grad)), path
    assert np.any(grad != 0), path
  mlm = overrides.get('albert_head', 'mlm') == 'mlm'
  assert (head == 'tied' and kind == 'albert' and mlm) == hasattr(lm.embed, 'mlm_dense')


@pytest.mark.parametrize('kind,overrides', VARIANTS)
def test_initial_logit_scale_matches_dense_at_every_rank(kind, overrides):
  """The std of the initial logits at ranks 8, 32 and D, averaged over 3 inits, is within 15%."""
  vocab, dim = 256, 64

  def logit_std(kind, rank, overrides):
    stds = []
    for seed in range(3):
      model = build_model(make_config(kind, rank, dim, seq_len=16, **overrides), vocab,
                          rngs=nnx.Rngs(seed))
      stds.append(float(jnp.std(model(jax.random.randint(
          jax.random.key(seed), (4, 16), 0, vocab)))))
    return np.mean(stds)

  reference = logit_std('dense', 8, {})
  np.testing.assert_allclose(reference, 1.0, rtol=0.1)
  overrides = {**overrides, **small_model(kind, vocab)}
  for rank in RANKS.get(kind, (8, 32, 64)):
    np.testing.assert_allclose(logit_std(kind, rank, overrides), reference, rtol=0.15,
                               err_msg=f'{kind} {overrides} rank {rank}')
  np.testing.assert_allclose(logit_std(kind, 8, {**overrides, 'head': 'untied'}), reference,
                             rtol=0.15)


def example_keys(seed: int, batch: int) -> jax.Array:
  return jax.random.split(jax.random.key(seed), batch)


def test_dropout_is_keyed_per_example_and_off_without_keys():
  config = make_config('svd')
  model = build_model(config, 20, rngs=nnx.Rngs(0))
  ids_BxL = jnp.arange(32).reshape(4, 8) % 20
  keys_B = example_keys(1, 4)
  train = [model(ids_BxL, dropout_keys_B=k) for k in (keys_B, keys_B, example_keys(2, 4))]
  np.testing.assert_array_equal(train[0], train[1])  # Same keys, same masks: no hidden state.
  assert not np.allclose(train[0], train[2])
  assert not np.allclose(train[0], model(ids_BxL))  # No keys: evaluation, no dropout.
  # An example's output depends on its own key only, not on the rest of the batch: the same
  # rows on two "devices" or in two micro-batches give the same result as in one batch.
  halves = [model(ids_BxL[i:i + 2], dropout_keys_B=keys_B[i:i + 2]) for i in (0, 2)]
  np.testing.assert_allclose(jnp.concatenate(halves), train[0], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='one key per example'):
    model(ids_BxL, dropout_keys_B=keys_B[:2])
  config.model.dropout = 0.0
  model = build_model(config, 20, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(model(ids_BxL), model(ids_BxL, dropout_keys_B=keys_B))


@pytest.mark.parametrize('kind', embeddings.KINDS)
def test_bfloat16_compute_keeps_float32_params_and_logits(kind):
  config = make_config(kind)
  ids_BxL = jnp.arange(16).reshape(2, 8) % 20
  logits32 = build_model(config, 20, rngs=nnx.Rngs(0))(ids_BxL)
  config.model.dtype = 'bfloat16'
  model = build_model(config, 20, rngs=nnx.Rngs(0))
  logits16 = model(ids_BxL)
  assert logits16.dtype == jnp.float32
  assert model.embed(ids_BxL).dtype == jnp.bfloat16
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(logits16, logits32, atol=0.1)


def test_jit_matches_eager_and_inputs_longer_than_seq_len_fail():
  config = make_config('albert')
  model = build_model(config, 20, rngs=nnx.Rngs(0))
  assert model.max_len == config.data.seq_len
  ids_BxL = jnp.arange(16).reshape(2, 8) % 20
  jitted = nnx.jit(lambda model, ids: model(ids))
  np.testing.assert_allclose(jitted(model, ids_BxL), model(ids_BxL), atol=1e-5)
  with pytest.raises(ValueError, match='max_len=data.seq_len=8'):
    model(jnp.zeros((1, 9), jnp.int32))
  with pytest.raises(ValueError, match='max_len'):
    ModelArgs.from_config(config.model, 20, 0)


def test_training_steps_reduce_the_loss():
  """A few Adam steps on a fixed batch lower the loss for every kind (the model can learn)."""
  ids_BxL = jax.random.randint(jax.random.key(0), (4, 8), 0, 20)
  for kind in embeddings.KINDS:
    model = build_model(make_config(kind, **small_model(kind, 20)), 20, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
      loss, grads = nnx.value_and_grad(loss_fn)(model, ids_BxL, jnp.roll(ids_BxL, -1, 1))
      optimizer.update(model, grads)
      return loss

    losses = [float(step(model, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], (kind, losses)


def test_at_one_seed_every_parameter_outside_embedding_and_head_is_the_same_for_every_kind():
  """The embedding and the untied head draw from streams of their own: kinds, ranks and heads
  start from bitwise the same blocks, positions and final norm."""
  def others(kind, rank, head, positions='rope'):
    config = make_config(kind, rank, head=head)
    config.model.positions = positions
    params = nnx.to_pure_dict(nnx.state(build_model(config, 40, rngs=nnx.Rngs(params=3)),
                                        nnx.Param))
    return {name: value for name, value in params.items() if name not in ('embed', 'head')}

  for positions in ('rope', 'learned'):
    reference = jax.tree.leaves(others('dense', 8, 'tied', positions))
    for kind, rank, head in [('dense', 8, 'untied'), ('albert', 4, 'tied'),
                             ('albert', 16, 'untied'), ('svd', 4, 'tied'),
                             ('svd', 16, 'untied'), ('adaptive', 8, 'tied'),
                             ('tt', 4, 'untied')]:
      leaves = jax.tree.leaves(others(kind, rank, head, positions))
      assert len(leaves) == len(reference)
      for a, b in zip(reference, leaves, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f'{kind} {rank} {head} {positions}')
  # ... while they do depend on the seed.
  kernels = [nnx.state(build_model(make_config('dense'), 40, rngs=nnx.Rngs(params=seed)),
                       nnx.Param)['blocks'][0]['qkv']['kernel'][...] for seed in (3, 4)]
  assert not np.array_equal(*kernels)
