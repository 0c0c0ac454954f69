"""Test set-up: 8 fake CPU devices, set before JAX is first imported."""

import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests never reach the Hugging Face hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import pathlib  # noqa: E402

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
