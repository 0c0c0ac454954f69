"""Optimizer: schedule shape, decay mask, and train.* validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import brown
from factorized.config import build
from factorized.train import inplace, optim


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
  cfg = brown.get_config('runlocal').train
  schedule = optim.learning_rate_schedule(cfg)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(cfg.warmup_steps)), cfg.lr, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(2)), cfg.lr * 2 / cfg.warmup_steps, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(cfg.num_steps)), cfg.lr * cfg.min_lr_ratio, rtol=1e-5)


@pytest.mark.parametrize('field, value, pattern', [
    ('num_steps', 0, r'train\.num_steps=0'),
    ('grad_accum_steps', 3, r'train\.batch_size=8 must be divisible by train\.grad_accum_steps=3'),
    ('warmup_steps', 30, r'train\.warmup_steps=30'),
    ('lr', -1.0, r'train\.lr=-1\.0'),
    ('b2', 1.0, r'train\.b2=1\.0'),
])
def test_bad_train_fields_are_named(field, value, pattern):
  cfg = brown.get_config('runlocal').train
  cfg[field] = value
  with pytest.raises(ValueError, match=pattern):
    build.TrainArgs.from_section(cfg)


def model_params(kind, rank=8, head='tied', penalty=0.0):
  """A runlocal model's config and its parameters (nnx.State)."""
  from flax import nnx

  from factorized.model import transformer as model_lib

  config = brown.get_config(f'runlocal,kind={kind},rank={rank},head={head}')
  config.model.embed.ortho_penalty = penalty
  model = model_lib.TransformerLM(build.model_args(config, 300), rngs=nnx.Rngs(params=0),
                                  token_counts=np.arange(300, 0, -1))
  return config, model, nnx.state(model, nnx.Param)


def table_norm(model) -> float:
  product = model.embed.factors()[0]
  for factor in model.embed.factors()[1:]:
    product = product @ factor
  return float(jnp.linalg.norm(product))


def test_weight_decay_mask_per_embed_decay_mode():
  _, _, params = model_params('svd')
  for mode, decayed in (('table', {'s_R'}), ('factors', {'U_VxR', 'V_RxD'}), ('none', set())):
    mask = nnx_dict(optim.decay_mask(params, kind='svd', embed_decay=mode))
    assert {name for name, on in mask['embed'].items() if on} == decayed, mode
    assert mask['blocks'][0]['qkv']['kernel'] and not mask['blocks'][0]['qkv']['bias']
    assert not mask['final_norm']['scale']
  _, _, params = model_params('albert')
  mask = nnx_dict(optim.decay_mask(params, kind='albert'))
  assert {name for name, on in mask['embed'].items() if on is True} == {'A_VxE', 'b_D'}
  assert mask['embed']['mlm_dense']['kernel']  # the MLM head is a head: decayed as a matrix
  _, _, params = model_params('adaptive')  # three bands: decay A_b, not P_b
  mask = nnx_dict(optim.decay_mask(params, kind='adaptive'))['embed']
  assert mask == {'A_VbxWb': {0: True, 1: True, 2: True},
                  'P_WbxD': {0: False, 1: False, 2: False}}
  _, _, params = model_params('tt')  # three cores: decay the first only (the table is linear)
  mask = nnx_dict(optim.decay_mask(params, kind='tt'))['embed']
  assert mask == {'G_RxVkxDkxR': {0: True, 1: False, 2: False}}


def nnx_dict(mask):
  from flax import nnx
  return nnx.to_pure_dict(mask)


def zero_gradient_steps(optimizer, params, steps: int):
  """`params` after `steps` optimizer updates with zero gradients (decay alone acts)."""
  import jax

  zeros = jax.tree.map(jnp.zeros_like, params)

  def body(_, carry):
    params, opt_state = carry
    updates, opt_state = optimizer.update(zeros, opt_state, params)
    return optim.optax.apply_updates(params, updates), opt_state

  return jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, optimizer.init(p)))[0])(params)


@pytest.mark.parametrize('mode', ['table', 'factors', 'none'])
def test_zero_gradient_steps_shrink_every_kinds_table_alike(mode):
  """AdamW's decoupled decay alone (zero gradients): the reconstructed table shrinks by the
  dense factor for every kind and rank under `table`; under `factors`, once per factor
  matrix in the product (twice as fast; three times for three TT cores; once for dpq's
  codebook, gathered by codes that the decay does not move)."""
  from flax import nnx

  shrink = {}
  for kind, rank in [('dense', 0), ('albert', 8), ('albert', 32), ('svd', 8), ('svd', 32),
                     ('adaptive', 8), ('adaptive', 32), ('tt', 8), ('dpq', 8)]:
    config, model, params = model_params(kind, max(rank, 1))
    config.train.update(embed_decay=mode, lr=3e-3, weight_decay=0.1, warmup_steps=0,
                        num_steps=1000, min_lr_ratio=1.0)
    args = build.build_args(build.from_config(config), 300)
    optimizer = optim.make_optimizer(args.train, args.model)
    before = table_norm(model)

    nnx.update(model, zero_gradient_steps(optimizer, params, 1000))
    shrink[(kind, rank)] = table_norm(model) / before
  dense = shrink.pop(('dense', 0))
  # Dense: (1 - lr wd)^1000 = 0.741, or no decay at all under `none`.
  np.testing.assert_allclose(dense, 1.0 if mode == 'none' else (1 - 3e-4) ** 1000, rtol=1e-3)
  for key, value in shrink.items():
    if mode == 'table':
      np.testing.assert_allclose(value, dense, rtol=0.02, err_msg=str(key))
    elif mode == 'factors':  # U and V (A and P, ...) decayed: dense to the number of factors
      power = {'tt': 3, 'dpq': 1}.get(key[0], 2)  # dpq's table: codebook rows, one factor
      np.testing.assert_allclose(value, dense ** power, rtol=0.02, err_msg=str(key))
    else:
      np.testing.assert_allclose(value, 1.0, rtol=1e-6, err_msg=str(key))


def test_an_unknown_embed_decay_is_named():
  cfg = brown.get_config('runlocal').train
  cfg.embed_decay = 'rows'
  with pytest.raises(ValueError, match=r"train\.embed_decay='rows' is unknown; allowed: "
                                       r'table\|factors\|none'):
    build.TrainArgs.from_section(cfg)


@pytest.mark.parametrize('max_norm', [0.5, 1e6])  # clips / does not
def test_clipping_in_place_gives_optax_clipping_bitwise(max_norm, monkeypatch):
  # 103 rows of 7 float32 (2,884 bytes): sliced in 10-row slices, the last one partial.
  monkeypatch.setattr(inplace, 'LARGE_BYTES', 1024)
  monkeypatch.setattr(inplace, 'SLICE_BYTES', 300)
  keys = jax.random.split(jax.random.key(0), 3)
  grads = {'table': jax.random.normal(keys[0], (103, 7)),
           'bias': jax.random.normal(keys[1], (5,)), 'scale': jax.random.normal(keys[2], ())}

  def clipped(transform):
    return jax.jit(lambda g: transform.update(g, transform.init(g))[0])(grads)

  ours, theirs = clipped(optim.clip_by_global_norm(max_norm)), clipped(
      optax.clip_by_global_norm(max_norm))
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  assert (max_norm < 1) == (not np.array_equal(ours['table'], grads['table']))
  # The same (empty) state: checkpoints written before keep restoring.
  assert (jax.tree.structure(optim.clip_by_global_norm(1.0).init(grads))
          == jax.tree.structure(optax.clip_by_global_norm(1.0).init(grads)))
