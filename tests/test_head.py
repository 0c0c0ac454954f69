"""The output head as its own factorization: an untied head of any kind at its own rank."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown, rank_sweep
from factorized import embeddings
from factorized.config import build
from factorized.model import costs
from factorized.model import loss as loss_lib
from factorized.runtime import parallel
from factorized.sweeps import sweep
from factorized.train import trainer
from tests.test_embeddings import _avals, explicit_table, make_lm, model_config, product, randomize
from tests.test_trainer import final_params, interrupt_at

HEAD_KINDS = [kind for kind in embeddings.KINDS if kind != 'dense']


def head_model_config(head_kind, head_rank=6, *, kind='svd', rank=4, dim=24, **overrides):
  return model_config(kind, rank, dim, head='untied', head_kind=head_kind, head_rank=head_rank,
                      **overrides)


@pytest.mark.parametrize('head_kind,overrides', [
    *[(kind, {}) for kind in HEAD_KINDS], ('albert', {'albert_head': 'transpose'})])
def test_head_logits_equal_the_explicit_product_of_the_heads_own_parameters(head_kind, overrides):
  vocab, seq_len = 130, 6
  model = make_lm(head_model_config(head_kind, **overrides), vocab, seq_len, rngs=nnx.Rngs(0))
  randomize(model.head)
  assert type(model.head) is embeddings.kind(head_kind).module
  ids_BxL = jax.random.randint(jax.random.key(3), (2, seq_len), 0, vocab)
  hidden_BxLxD = model.hidden(model.embed_tokens(ids_BxL))
  logits = np.asarray(model.decode(model.embed_tokens(ids_BxL)), np.float64)
  np.testing.assert_allclose(
      logits, np.asarray(model.head.attend(hidden_BxLxD), np.float64), rtol=1e-6, atol=1e-6)
  if head_kind == 'albert' and overrides.get('albert_head') != 'transpose':
    return  # ALBERT's MLM head is no table product (tests/test_embeddings.py checks it)
  table_VxD = (product([model.head.A_VxE[...], model.head.P_ExD[...]]) if head_kind == 'albert'
               else explicit_table(head_kind, model.head, vocab))
  np.testing.assert_allclose(logits, np.asarray(hidden_BxLxD, np.float64) @ table_VxD.T,
                             rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize('head_kind,overrides', [
    *[(kind, {}) for kind in HEAD_KINDS], ('albert', {'albert_head': 'transpose'})])
def test_every_parameter_of_a_head_gets_a_gradient(head_kind, overrides):
  """A head holds only what its `attend` uses (ALBERT's lookup side, P and b, is no head)."""
  vocab, seq_len = 130, 6
  ids_BxL = jax.random.randint(jax.random.key(3), (4, seq_len), 0, vocab)
  counts = np.arange(vocab, 0, -1) + vocab * np.bincount(np.asarray(ids_BxL).ravel(),
                                                         minlength=vocab)
  config = head_model_config(head_kind, kind='svd', band_cutoffs=(vocab // 4,), **overrides)
  model = make_lm(config, vocab, seq_len, rngs=nnx.Rngs(0), token_counts=counts)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def nll(params):
    return loss_lib.model_nll_sum(nnx.merge(graphdef, params, rest), ids_BxL,
                                  jnp.roll(ids_BxL, -1, 1))

  head_grads = nnx.to_flat_state(jax.grad(nll)(params)['head'])
  assert head_grads
  for path, grad in head_grads:
    assert np.any(np.asarray(grad[...]) != 0), (head_kind, path)


@pytest.mark.parametrize('head_kind', embeddings.KINDS)
def test_counts_are_the_input_plus_the_head_and_match_the_built_model(head_kind):
  vocab = 300
  config = brown.get_config('runlocal,kind=adaptive,rank=8,head=untied')
  config.model.embed.head_kind = head_kind
  config.model.embed.head_rank = 0 if head_kind == 'dense' else 12
  spec = build.from_config(config)
  model = make_lm(spec.model, vocab, spec.data.seq_len, rngs=nnx.Rngs(0))

  def count(module):
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

  args = build.model_args(spec, vocab)
  params, flops = costs.param_counts(args), costs.flops_per_token(args)
  # dpq's query table and key codebooks train but are not stored: its training_params.
  training_only = args.head.training_params() if args.head else 0
  assert params['total'] + training_only == count(model)
  assert params['embedding'] == count(model.embed)
  assert params['output_head'] + training_only == count(model.head)
  assert params['vocab'] == params['embedding'] + params['output_head']
  dim = spec.model.model_dim
  if head_kind == 'dense':
    assert params['output_head'] == dim * vocab and flops['output_head'] == 2 * dim * vocab
  else:
    head = embeddings.head_config(spec.model, vocab)
    assert (head.name, head.rank) == (head_kind, 12)
    assert flops['output_head'] == head.flops_per_token()['tied_head']
  if head_kind == 'svd':  # U (V x R), s (R), V (R x D) at the head's own rank
    assert params['output_head'] == vocab * 12 + 12 + 12 * dim
  if head_kind == 'albert':  # A (V x E) and ALBERT's MLM head (D x E + E, LN_E, V); no P, b
    assert params['output_head'] == vocab * 12 + dim * 12 + 12 + 2 * 12 + vocab


# dpq's head is the VxD table of its codebook rows (embeddings/dpq.py).
@pytest.mark.parametrize('head_kind', [kind for kind in HEAD_KINDS if kind != 'dpq'])
def test_a_factorized_head_never_builds_vxd_in_the_loss_or_its_gradient(head_kind):
  vocab, dim, batch, seq_len = 130, 24, 2, 6
  model = make_lm(head_model_config(head_kind, kind='svd', dim=dim), vocab, seq_len,
                  rngs=nnx.Rngs(0))
  graphdef, params, consts = nnx.split(model, nnx.Param, ...)
  ids_BxL = jnp.zeros((batch, seq_len), jnp.int32)

  def loss(params):
    return loss_lib.model_nll_sum(nnx.merge(graphdef, params, consts), ids_BxL, ids_BxL)

  shapes = {tuple(aval.shape) for fn in (loss, jax.grad(loss))
            for aval in _avals(jax.make_jaxpr(fn)(params))}
  assert not shapes & {(vocab, dim), (dim, vocab)}, sorted(shapes)
  large = [shape for shape in shapes if math.prod(shape) >= vocab * dim
           and shape[0] not in (batch, batch * seq_len)]
  assert not large, large


def test_the_head_draws_from_its_own_stream_and_its_table_is_decayed_like_the_input():
  vocab, seq_len = 130, 6
  with_svd_head = make_lm(head_model_config('svd'), vocab, seq_len, rngs=nnx.Rngs(0))
  with_tt_head = make_lm(head_model_config('tt', head_rank=4), vocab, seq_len, rngs=nnx.Rngs(0))
  # The input and the blocks do not depend on the head's kind.
  np.testing.assert_array_equal(with_svd_head.embed.U_VxR[...], with_tt_head.embed.U_VxR[...])
  np.testing.assert_array_equal(with_svd_head.blocks[0].mlp_in.kernel[...],
                                with_tt_head.blocks[0].mlp_in.kernel[...])
  from factorized.train import optim
  params = nnx.to_pure_dict(nnx.state(with_svd_head, nnx.Param))
  mask = optim.decay_mask(params, kind='svd', embed_decay='table', head_kind='svd')
  table = embeddings.kind('svd').module.TABLE_DECAY
  assert {name for name, decayed in mask['head'].items() if decayed} == set(table)
  assert {name for name, decayed in mask['embed'].items() if decayed} == set(table)


@pytest.mark.parametrize('arg,override,message', [
    ('head=untied', {'head_kind': 'lora'}, r"model\.embed\.head_kind='lora' is unknown"),
    ('head=untied', {'head_kind': 'svd', 'head_rank': -1},
     r'model\.embed\.head_rank=-1 must be an integer >= 0'),
    ('head=tied', {'head_kind': 'svd'}, r"model\.embed\.head_kind='svd' needs model\.embed\."
                                        r'head=untied'),
    ('head=untied', {'head_rank': 16}, r'model\.embed\.head_rank=16: the dense head has no rank'),
])
def test_a_bad_head_kind_or_rank_is_one_line_naming_the_field(arg, override, message):
  config = brown.get_config(f'runlocal,kind=svd,rank=8,{arg}')
  config.model.embed.update(override)
  with pytest.raises(ValueError, match=message):
    build.from_config(config)


def test_a_head_rank_its_kind_refuses_names_the_head():
  config = brown.get_config('runlocal,kind=adaptive,rank=8,head=untied,head_kind=svd,'
                            'head_rank=64')  # above D = 32
  with pytest.raises(ValueError, match=r"model\.embed\.head_kind='svd', head_rank=64: the head"):
    make_lm(build.from_config(config).model, 300, 16, rngs=nnx.Rngs(0))


def test_the_sweep_crosses_input_ranks_with_head_ranks_and_names_the_points():
  points = rank_sweep.get_sweep('runlocal,head=untied,kinds=svd,ranks=8+16,head_kinds=svd,'
                                'head_ranks=8+16+64')  # 64 > D = 32: dropped
  names = [sweep.point_name(point) for point in points]
  assert names == ['svd_rank8_untied_headsvd8', 'svd_rank8_untied_headsvd16',
                   'svd_rank16_untied_headsvd8', 'svd_rank16_untied_headsvd16']
  base = rank_sweep.get_config('runlocal,head=untied')
  made = sweep.make_points(base, points)
  assert made[1].config.model.embed.head_kind == 'svd'
  assert made[1].config.model.embed.head_rank == 16
  both = rank_sweep.get_sweep('runlocal,head=both,kinds=svd,ranks=8,head_kinds=dense+adaptive,'
                              'head_ranks=8')
  assert [sweep.point_name(p) for p in both] == [
      'svd_rank8', 'svd_rank8_untied', 'svd_rank8_untied_headadaptive8']
  with pytest.raises(ValueError, match='head_kinds=.*needs head=untied'):
    rank_sweep.get_sweep('head_kinds=svd')
  with pytest.raises(ValueError, match='head_kinds=.*subset'):
    rank_sweep.get_sweep('head=untied,head_kinds=lora')


def test_an_svd_head_trains_the_same_on_one_and_four_devices_and_resumes_bitwise(
    tiny_config, tmp_path, monkeypatch):
  tiny_config.model.embed.update(kind='adaptive', head='untied', head_kind='svd', head_rank=4)
  tiny_config.train.num_steps = 6
  config = build.from_config(tiny_config)
  results = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f'dev{devices}')
    summary = trainer.train_and_evaluate(
        config, workdir, mesh=parallel.make_mesh(jax.devices()[:devices]))
    results[devices] = summary, final_params(workdir, devices)
  (one, params_one), (four, params_four) = results[1], results[4]
  assert one['params']['output_head'] == costs.param_counts(
      build.model_args(config, one['vocab_size']))['output_head']
  np.testing.assert_allclose(four['valid_ppl'], one['valid_ppl'], rtol=1e-5)
  for a, b in zip(params_one, params_four, strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)
  one_device = parallel.make_mesh(jax.devices()[:1])
  with monkeypatch.context() as patch:
    interrupt_at(patch, 4)
    with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM at step 4'):
      trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), mesh=one_device)
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), mesh=one_device)
  for a, b in zip(params_one, final_params(tmp_path / 'resumed'), strict=True):
    np.testing.assert_array_equal(a, b)  # bitwise on CPU
