"""Tests of factorized/embeddings/dpq.py: codes, the stored table, the straight-through
gradient, the bytes stored and bad fields."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from factorized import embeddings
from factorized.embeddings import dpq
from factorized.model import costs
from factorized.model.transformer import ModelArgs
from tests.test_embeddings import make_embedding, make_lm, model_config


def trained_lm(vocab=40, dim=16, codewords=6, groups=4, steps=3):
  """A tiny dpq LM after a few SGD steps on random next-token targets."""
  config = model_config('dpq', codewords, dim, dpq_groups=groups)
  model = make_lm(config, vocab, 8, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  ids_BxL = jax.random.randint(jax.random.key(1), (4, 8), 0, vocab)

  def loss(params):
    logits_BxLxV = nnx.merge(graphdef, params, rest)(ids_BxL)[:, :-1]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits_BxLxV),
                                         ids_BxL[:, 1:, None], -1))

  for _ in range(steps):
    grads = jax.grad(loss)(params)
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
  before = {name: np.asarray(getattr(model.embed, name)[...])
            for name in ('query_VxD', 'keys_KxD', 'values_KxD')}
  nnx.update(model, params)
  return model, before


def test_trained_codes_are_integers_in_range_and_the_table_is_the_codebooks_gathered():
  vocab, codewords, groups = 40, 6, 4
  model, before = trained_lm(vocab, codewords=codewords, groups=groups)
  embed = model.embed
  # Training moved Q and the keys (through the straight-through gradient) and the values.
  for name in ('query_VxD', 'keys_KxD', 'values_KxD'):
    assert not np.array_equal(before[name], getattr(embed, name)[...]), name
  codes_VxG = np.asarray(embed.codes())
  assert codes_VxG.dtype == np.int32 and codes_VxG.shape == (vocab, groups)
  assert codes_VxG.min() >= 0 and codes_VxG.max() < codewords
  values_KxGxS = np.asarray(embed.values_KxD[...]).reshape(codewords, groups, -1)
  gathered_VxD = np.stack([np.concatenate([values_KxGxS[codes_VxG[v, g], g]
                                           for g in range(groups)]) for v in range(vocab)])
  np.testing.assert_array_equal(embed.stored_table(), gathered_VxD)
  np.testing.assert_array_equal(embed(jnp.arange(vocab)[None])[0], gathered_VxD)  # lookup
  x_BxLxD = jax.random.normal(jax.random.key(2), (2, 3, gathered_VxD.shape[1]))
  np.testing.assert_allclose(embed.attend(x_BxLxD), np.asarray(x_BxLxD) @ gathered_VxD.T,
                             atol=1e-5, rtol=1e-5)  # the head: through the same table


def test_straight_through_is_one_hot_forward_and_the_softmax_gradient_backward():
  scores_NxGxK = jax.random.normal(jax.random.key(0), (3, 2, 5))
  weights_NxGxK = jax.random.normal(jax.random.key(1), (3, 2, 5))
  tau = 0.7
  onehot = dpq.straight_through(scores_NxGxK, tau)
  np.testing.assert_array_equal(
      onehot, np.eye(5)[np.argmax(np.asarray(scores_NxGxK), -1)])
  grad = jax.grad(lambda s: jnp.sum(dpq.straight_through(s, tau) * weights_NxGxK))(scores_NxGxK)
  # d/ds_j sum_k w_k softmax(s / tau)_k = p_j (w_j - sum_k w_k p_k) / tau.
  p = np.asarray(jax.nn.softmax(scores_NxGxK / tau, -1), np.float64)
  w = np.asarray(weights_NxGxK, np.float64)
  expected = p * (w - np.sum(w * p, -1, keepdims=True)) / tau
  np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize('codewords', [2, 3, 16, 17, 256])
def test_codes_pack_into_ceil_log2_k_bits_and_the_bytes_are_those_stored(codewords):
  vocab, dim, groups = 300, 32, 8
  config = model_config('dpq', codewords, dim, dpq_groups=groups)
  embed = make_embedding(config, vocab, rngs=nnx.Rngs(0))
  codes_VxG = np.asarray(embed.codes())
  packed = dpq.pack_codes(codes_VxG, codewords)
  np.testing.assert_array_equal(dpq.unpack_codes(packed, codewords, codes_VxG.shape), codes_VxG)
  bits = math.ceil(math.log2(codewords))
  assert packed.nbytes == math.ceil(vocab * groups * bits / 8)
  kind = embeddings.embed_config(config, vocab)
  assert kind.code_bytes() == packed.nbytes
  stored = packed.nbytes + np.asarray(embed.values_KxD[...], np.float32).nbytes
  assert costs.vocab_bytes(ModelArgs.from_config(config, vocab, 8))['embedding'] == stored
  assert kind.param_counts() == {'embedding': codewords * dim, 'tied_head': 0}
  assert kind.training_params() == embed.query_VxD.size + embed.keys_KxD.size
  # summary.json's params: the training-time table apart, as training memory.
  counts = costs.param_counts(ModelArgs.from_config(config, vocab, 8))
  assert counts['training_only'] == kind.training_params()
  assert counts['embedding'] == counts['vocab'] == codewords * dim


@pytest.mark.parametrize('override,words', [
    ({'rank': 1}, ['model.embed.rank=1', 'codewords per group']),
    ({'dpq_groups': 5}, ['model.embed.dpq_groups=5', 'model.model_dim=32']),
    ({'dpq_groups': 0}, ['model.embed.dpq_groups=0']),
    ({'dpq_temperature': -1.0}, ['model.embed.dpq_temperature=-1.0'])])
def test_bad_fields_raise_one_line_naming_the_field(override, words):
  override = {'rank': 4, **override}
  config = model_config('dpq', override.pop('rank'), 32, **override)
  with pytest.raises(ValueError) as error:
    embeddings.embed_config(config, 100)
  assert '\n' not in str(error.value)
  for word in words:
    assert word in str(error.value)
