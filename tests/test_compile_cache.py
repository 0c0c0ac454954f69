"""The persistent compilation cache: where it goes, who wins, how to turn it off."""

import jax
import ml_collections
import pytest

from factorized.runtime import compile_cache


@pytest.fixture
def no_cache_dir():
  """jax_compilation_cache_dir unset for the test (conftest sets one), restored after."""
  saved = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  jax.config.update('jax_compilation_cache_dir', saved)


def data_config(cache_dir: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'cache_dir': cache_dir})


def test_the_cache_goes_under_the_cache_root(no_cache_dir, tmp_path, monkeypatch):
  monkeypatch.delenv(compile_cache.ENV_SWITCH, raising=False)
  directory = compile_cache.enable(data_config(str(tmp_path)))
  assert directory == str(tmp_path / 'jax') == jax.config.jax_compilation_cache_dir
  monkeypatch.setenv('FACTORIZED_CACHE_DIR', str(tmp_path / 'env'))
  jax.config.update('jax_compilation_cache_dir', None)
  assert compile_cache.enable(data_config('')) == str(tmp_path / 'env' / 'jax')


@pytest.mark.parametrize('value', ['0', 'off', 'False'])
def test_the_switch_turns_it_off(no_cache_dir, tmp_path, monkeypatch, value):
  monkeypatch.setenv(compile_cache.ENV_SWITCH, value)
  assert compile_cache.enable(data_config(str(tmp_path))) is None
  assert not jax.config.jax_compilation_cache_dir


def test_jax_own_setting_wins(tmp_path, monkeypatch):
  monkeypatch.delenv(compile_cache.ENV_SWITCH, raising=False)
  chosen = jax.config.jax_compilation_cache_dir
  assert chosen  # conftest's JAX_COMPILATION_CACHE_DIR
  assert compile_cache.enable(data_config(str(tmp_path))) == chosen
  assert jax.config.jax_compilation_cache_dir == chosen


def test_gpu_autotuning_is_kept_beside_the_programs(no_cache_dir, tmp_path, monkeypatch):
  """On a GPU most of a compile is XLA's autotuning (results/bench_h200); JAX keeps its
  per-fusion results under the cache folder, so runs of other programs with the same
  matmuls reuse them. Guards against a setting that turns that off."""
  from jax._src import compiler  # the compile options JAX hands XLA; no public API
  monkeypatch.delenv(compile_cache.ENV_SWITCH, raising=False)
  directory = compile_cache.enable(data_config(str(tmp_path)))
  options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
  autotune = options.executable_build_options.debug_options.xla_gpu_per_fusion_autotune_cache_dir
  assert autotune == str(tmp_path / 'jax' / 'xla_gpu_per_fusion_autotune_cache_dir')
  assert autotune.startswith(directory)
