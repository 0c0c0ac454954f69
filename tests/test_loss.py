"""Tests of what bounds the train step's memory: factorized/model/loss.py (the chunked head and
cross-entropy equal the plain ones) and model.remat's recomputed blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized.config import build
from factorized.model import loss
from factorized.model.transformer import TransformerLM
from factorized.runtime import parallel
from factorized.train import inplace, optim, trainer
from factorized.train.step import make_train_step

VOCAB = 60
HEADS = [  # (kind, head, embed overrides): every kind's tied head, and the untied one
    # (the same module whatever the kind).
    ('dense', 'tied', {}),
    ('albert', 'tied', {'albert_head': 'mlm'}),
    ('albert', 'tied', {'albert_head': 'transpose'}),
    ('svd', 'tied', {}),
    ('adaptive', 'tied', {'band_cutoffs': (10, 30)}),
    ('tt', 'tied', {}),
    ('svd', 'untied', {}),
]


def build_model(config, vocab_size, *, rngs, **kwargs):
  return TransformerLM(build.model_args(config, vocab_size), rngs=rngs, **kwargs)


def make_config(kind, head, chunk_rows, **embed_overrides):
  config = brown.get_config('runlocal')
  config.data.seq_len = 8
  config.model.update(model_dim=16, mlp_dim=32, head_chunk_rows=chunk_rows)
  config.model.embed.update(kind=kind, rank=4, head=head, **embed_overrides)
  return config


def make_model(config):
  counts = np.arange(VOCAB, 0, -1)  # id 0 the most frequent (adaptive's bands)
  model = build_model(config, VOCAB, rngs=nnx.Rngs(0), token_counts=counts)
  # A non-zero bias, so the MLM head's bias gradient is checked at a general point.
  if getattr(model.embed, 'mlm_head', False):
    model.embed.mlm_bias_V[...] = jax.random.normal(jax.random.key(2), (VOCAB,))
  return model


def batch(batch_size=3, seq_len=8):
  ids = jax.random.randint(jax.random.key(1), (batch_size, seq_len + 1), 0, VOCAB)
  return ids[:, :-1], ids[:, 1:]


def plain_nll_sum(model, inputs_BxL, targets_BxL, dropout_keys_B=None):
  logits_BxLxV = model(inputs_BxL, dropout_keys_B=dropout_keys_B)
  return loss.token_nll(logits_BxLxV, targets_BxL).sum()


def value_and_grads(config, nll_fn):
  graphdef, params, rest = nnx.split(make_model(config), nnx.Param, ...)
  inputs_BxL, targets_BxL = batch()
  keys_B = jax.random.split(jax.random.key(3), 3)  # with dropout: the masks must match
  return jax.jit(jax.value_and_grad(
      lambda p: nll_fn(nnx.merge(graphdef, p, rest), inputs_BxL, targets_BxL, keys_B)))(params)


def assert_chunked_equals_plain(config):
  value, grads = value_and_grads(config, loss.model_nll_sum)
  ref_value, ref_grads = value_and_grads(config, plain_nll_sum)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  flat, ref_flat = (jax.tree_util.tree_leaves_with_path(g) for g in (grads, ref_grads))
  assert [path for path, _ in flat] == [path for path, _ in ref_flat]
  for (path, leaf), (_, ref_leaf) in zip(flat, ref_flat, strict=True):
    scale = float(jnp.max(jnp.abs(ref_leaf)))
    assert scale > 0, path  # every parameter gets a gradient
    np.testing.assert_allclose(leaf, ref_leaf, rtol=1e-5, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('kind,head,overrides', HEADS)
def test_chunked_loss_and_gradients_equal_the_plain_ones(kind, head, overrides):
  # 24 rows in chunks of 5: four full chunks and a partial one of 4 rows.
  assert loss.chunk_rows_for(5, 24, VOCAB, 16) == 5
  assert_chunked_equals_plain(make_config(kind, head, 5, **overrides))


@pytest.mark.parametrize('head', ['tied', 'untied'])
def test_a_table_head_in_vocabulary_slices_equals_the_plain_loss(head):
  # dense's tied head and the untied head name their logits' table (LOGITS_TABLE): the
  # loss walks the vocabulary in slices, the backward pass recomputing the logits. Slices
  # of 7 rows: 8 full ones of the 60 rows and a partial one of 4.
  config = make_config('dense', head, 5)
  config.model.head_chunk_vocab = 7
  assert loss._split_head(make_model(config).head_module())[0].table
  assert_chunked_equals_plain(config)


def test_automatic_vocabulary_slices_bound_the_tile():
  assert loss.vocab_slice_rows(0, 5, VOCAB, 16) == VOCAB  # one slice
  assert loss.vocab_slice_rows(0, 256, 131072, 256) == 8192  # 8 MiB tiles and slices
  assert loss.vocab_slice_rows(0, 2048, 131072, 256) == 1024
  assert loss.vocab_slice_rows(7, 5, VOCAB, 16) == 7
  assert loss.vocab_slice_rows(100, 5, VOCAB, 16) == VOCAB


def test_where_the_logits_fit_the_loss_is_the_plain_one_bitwise():
  config = make_config('albert', 'tied', 0)
  value, grads = value_and_grads(config, loss.model_nll_sum)
  ref_value, ref_grads = value_and_grads(config, plain_nll_sum)
  assert value == ref_value
  for leaf, ref_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
    np.testing.assert_array_equal(leaf, ref_leaf)


@pytest.mark.parametrize('kind,chunk_rows', [('svd', 1), ('svd', 7), ('svd', 24), ('svd', 100),
                                             ('dense', 5), ('dense', 24)])
def test_per_token_nll_does_not_depend_on_the_chunk_size(kind, chunk_rows):
  config = make_config(kind, 'tied', chunk_rows)
  config.model.head_chunk_vocab = 7  # dense: slices of the table (svd has none)
  model = make_model(config)
  inputs_BxL, targets_BxL = batch()
  expected = loss.token_nll(model(inputs_BxL), targets_BxL)
  got = loss.model_token_nll(model, inputs_BxL, targets_BxL)
  assert got.shape == targets_BxL.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_gives_a_float32_loss_and_float32_gradients():
  config = make_config('dense', 'untied', 5)
  config.model.dtype = 'bfloat16'
  value, grads = value_and_grads(config, loss.model_nll_sum)
  ref_value, ref_grads = value_and_grads(config, plain_nll_sum)
  assert value.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(value, ref_value, rtol=1e-3)
  np.testing.assert_allclose(grads['head']['W_VxD'][...], ref_grads['head']['W_VxD'][...],
                             atol=2e-2)


def test_automatic_chunks_keep_the_plain_loss_where_it_fits_and_bound_the_tile():
  # Brown's default training (32 x 128 rows) and evaluation (64 x 128) batches: plain.
  assert loss.chunk_rows_for(0, 4096, 17906, 256) == 4096
  assert loss.chunk_rows_for(0, 8192, 17906, 256) == 8192
  # V=131,072 and 16 x 128 rows (1 GiB of logits): balanced chunks of >= D rows.
  assert loss.chunk_rows_for(0, 2048, 131072, 256) == 256  # dense: K = D rows
  assert loss.chunk_rows_for(0, 2048, 131072, 64) == 64  # svd R=64: 32 MiB tiles
  rows = loss.chunk_rows_for(0, 5000, 131072, 64)  # balanced: the last chunk nearly full
  assert rows * 131072 * 4 <= loss.TILE_BYTES and -(-5000 // rows) * rows - 5000 < rows
  assert loss.chunk_rows_for(5000, 4096, 17906, 128) == 4096
  with pytest.raises(ValueError, match='model.head_chunk_rows=-1'):
    loss.chunk_rows_for(-1, 10, 10, 4)


def test_the_head_width_is_its_parameters_per_vocabulary_row():
  widths = {}
  for kind, head in (('dense', 'tied'), ('svd', 'tied'), ('svd', 'untied')):
    model = make_model(make_config(kind, head, 0))
    widths[kind, head] = loss.head_width(model.head_module(), VOCAB)
  # svd R=4, D=16: U (60x4), s, V (4x16): 4 + (4 + 64) / 60, rounded up.
  assert widths == {('dense', 'tied'): 16, ('svd', 'tied'): 6, ('svd', 'untied'): 16}


def test_a_bad_chunk_size_names_the_field():
  config = make_config('dense', 'tied', -3)
  with pytest.raises(ValueError, match='model.head_chunk_rows=-3 must be an integer >= 0'):
    build_model(config, VOCAB, rngs=nnx.Rngs(0))
  config = make_config('dense', 'tied', 0)
  config.model.head_chunk_vocab = -2
  with pytest.raises(ValueError, match='model.head_chunk_vocab=-2 must be an integer >= 0'):
    build_model(config, VOCAB, rngs=nnx.Rngs(0))


def compiled_temp_bytes(config, vocab, batch_size, seq_len):
  config.data.seq_len, config.train.batch_size = seq_len, batch_size
  mesh = parallel.make_mesh(jax.devices()[:1])
  args = build.build_args(build.from_config(config), vocab)
  parts, state = trainer.init_state(args, mesh)
  step = make_train_step(parts, optim.make_optimizer(args.train, args.model),
                         optim.learning_rate_schedule(args.train), mesh)
  ids = np.zeros((batch_size, seq_len), np.int32)
  batch_ = parallel.global_batch({'inputs': ids, 'targets': ids}, mesh)
  return step.lower(state, batch_).compile().memory_analysis().temp_size_in_bytes


def test_the_compiled_train_step_never_holds_the_batch_logits():
  vocab, batch_size, seq_len = 4096, 16, 64
  logits_bytes = batch_size * seq_len * vocab * 4  # 16 MiB
  chunked = compiled_temp_bytes(make_config('svd', 'tied', 128), vocab, batch_size, seq_len)
  plain = compiled_temp_bytes(make_config('svd', 'tied', 0), vocab, batch_size, seq_len)
  assert plain > 2 * logits_bytes, plain  # the plain loss holds several
  assert chunked < logits_bytes / 2, (chunked, logits_bytes)


def test_recomputed_blocks_give_the_same_loss_and_gradients():
  config = make_config('svd', 'tied', 0)
  config.model.dropout = 0.1  # the recomputation must draw the same masks
  plain = value_and_grads(config, plain_nll_sum)
  config.model.remat = True
  recomputed = value_and_grads(config, plain_nll_sum)
  np.testing.assert_array_equal(recomputed[0], plain[0])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               recomputed[1], plain[1])


def test_recomputed_blocks_free_the_activations_of_all_but_one_block():
  vocab, batch_size, seq_len = 64, 16, 64
  config = make_config('dense', 'tied', 0)
  config.model.update(num_layers=4, model_dim=64, mlp_dim=256)
  saved = compiled_temp_bytes(config, vocab, batch_size, seq_len)
  config.model.remat = True
  recomputed = compiled_temp_bytes(config, vocab, batch_size, seq_len)
  assert recomputed < 0.6 * saved, (recomputed, saved)


def test_a_table_heads_step_holds_the_table_gradient_once(monkeypatch):
  # dense, V=32,768, D=64: an 8 MiB table, 128 rows per chunk. Its gradient is summed in
  # vocabulary slices (loss.py), over devices and clipped a slice at a time (inplace.py), so
  # the step holds it once, and 1 MiB tiles. The plain loss holds the 8 MiB logits of
  # each 128-row chunk twice and more, on top.
  monkeypatch.setattr(inplace, 'SLICE_BYTES', 2**20)
  monkeypatch.setattr(inplace, 'LARGE_BYTES', 2**20)
  vocab, table_bytes = 32768, 32768 * 64 * 4
  config = make_config('dense', 'tied', 128)
  config.model.head_chunk_vocab = 2048  # 1 MiB tiles and slices
  config.model.update(num_layers=1, model_dim=64, mlp_dim=64)
  sliced = compiled_temp_bytes(config, vocab, 8, 64)
  assert sliced < 1.9 * table_bytes, sliced / table_bytes


def test_a_head_in_its_own_vocabulary_order_gives_the_id_order_loss_without_permuting():
  # adaptive's head computes its logits band by band (frequency order): the loss takes them
  # so, with the targets' positions, and equals the loss of the id-order logits, gradients
  # included, while neither pass gathers or scatters BxLxV logits.
  config = make_config('adaptive', 'tied', 0, band_cutoffs=(10, 30))
  assert_chunked_equals_plain(config)
  graphdef, params, rest = nnx.split(make_model(config), nnx.Param, ...)
  inputs_BxL, targets_BxL = batch()
  jaxpr = jax.make_jaxpr(jax.value_and_grad(lambda p: loss.model_nll_sum(
      nnx.merge(graphdef, p, rest), inputs_BxL, targets_BxL)))(params)
  permuted = [eqn.outvars[0].aval.shape for eqn in jaxpr.jaxpr.eqns
              if eqn.primitive.name in ('gather', 'scatter-add', 'scatter_add')
              and eqn.outvars[0].aval.shape[-1:] == (VOCAB,)]
  assert not permuted, permuted
