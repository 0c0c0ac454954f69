"""Optimizer: schedule shape, decay mask, and train.* validation."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import brown
from factorized import optim


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
  cfg = brown.get_config('runlocal').train
  schedule = optim.learning_rate_schedule(cfg)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(cfg.warmup_steps)), cfg.lr, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(2)), cfg.lr * 2 / cfg.warmup_steps, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(cfg.num_steps)), cfg.lr * cfg.min_lr_ratio, rtol=1e-5)


def test_weight_decay_skips_vectors():
  params = {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones(4), 'scale': jnp.ones(4),
            's': jnp.ones(5), 'U': jnp.ones((6, 5))}
  mask = optim.decay_mask(params)
  assert mask == {'kernel': True, 'bias': False, 'scale': False, 's': False, 'U': True}


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
    optim.validate_train_config(cfg)
