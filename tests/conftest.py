"""Test set-up: 8 fake CPU devices, set before JAX is first imported."""

import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests never reach the Hugging Face hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def brown_zip() -> pathlib.Path:
  """The real Brown corpus file, from $FACTORIZED_DATA_DIR (skips when absent)."""
  data_dir = os.environ.get('FACTORIZED_DATA_DIR')
  if not data_dir or not (pathlib.Path(data_dir) / 'brown.zip').exists():
    pytest.skip('needs brown.zip in $FACTORIZED_DATA_DIR (CI sets ../shared/data)')
  return pathlib.Path(data_dir) / 'brown.zip'


@pytest.fixture
def text_config(tmp_path):
  """The data config of a generated corpus: random sentences over 40 Zipf-ish words."""
  from configs import brown
  from factorized import data

  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(40)]
  probs = 1.0 / np.arange(1, 41)
  for split, num_lines in (('train', 120), ('valid', 30), ('test', 20)):
    lines = [' '.join(rng.choice(words, size=rng.integers(1, 9), p=probs / probs.sum()))
             for _ in range(num_lines)]
    (tmp_path / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  config = brown.get_config('runlocal').data
  config.update(corpus='text', vocab_size=0, min_freq=2, seq_len=8,
                cache_dir=str(tmp_path / 'cache'),
                **{f'{s}_files': str(tmp_path / f'{s}.txt') for s in data.SPLITS})
  return config


@pytest.fixture
def tiny_config(text_config):
  """A whole runlocal config on the generated corpus: trains in a second or two."""
  from configs import brown

  config = brown.get_config('runlocal')
  config.data = text_config
  config.model.embed.rank = 8
  config.model.model_dim = 16
  config.model.mlp_dim = 32
  config.train.update(num_steps=12, batch_size=8, eval_batch_size=8, warmup_steps=2,
                      eval_every=6, ckpt_every=4, log_every=2)
  return config
