"""The benchmark scripts run at a tiny size and write well-formed output; the plain-JAX
reference is the project's model; the speed rewrites keep the maths. No timing asserts."""

import csv
import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.config import build
from factorized.model import transformer as model_lib

TINY = ['--vocab_size=300', '--model_dim=32', '--num_layers=1', '--num_heads=2',
        '--seq_len=16', '--batch_size=8', '--warmup=1', '--eval_steps=2', '--peak_sizes=128']


def load_script(repo_root, name: str):
  """Imports benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
  spec = importlib.util.spec_from_file_location(name, repo_root / 'benchmarks' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up while the class is built
  spec.loader.exec_module(module)
  return module


def test_step_time_writes_json_csv_and_plot(repo_root, tmp_path):
  out = tmp_path / 'rows.json'
  result = subprocess.run(
      [sys.executable, str(repo_root / 'benchmarks' / 'step_time.py'), *TINY,
       '--kinds=dense,svd,tt', '--ranks=4', '--steps=4', '--rounds=2',
       '--reference', '--published_peak_tflops=0.5',
       f'--out={out}', '--plot', f'--profile={tmp_path / "profile"}'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'tokens/s' in result.stdout and 'load average' in result.stdout
  rows = json.loads(out.read_text())
  assert [(r['kind'], r['rank']) for r in rows] == [
      ('dense', 0), ('svd', 4), ('tt', 4), ('reference', 0)]
  for row in rows:
    assert row['steps'] == 4
    assert row['step_ms_min'] <= row['step_ms_median'] <= row['step_ms_max']
    assert row['tokens_per_s'] == pytest.approx(8 * 16 / row['step_ms_median'] * 1e3)
    assert row['train_flops_per_token'] == 3 * row['flops_per_token'] > 0
    assert row['flops_per_token'] == (row['flops_embedding'] + row['flops_output_head']
                                      + row['flops_blocks'])
    train_flops_per_s = row['tokens_per_s'] * row['train_flops_per_token']
    assert row['devices'] == jax.device_count() >= 1
    assert 0 < row['mfu'] == pytest.approx(
        train_flops_per_s / (row['devices'] * row['peak_flops']))
    assert row['published_peak_flops'] == 0.5e12
    assert row['mfu_vs_published'] == pytest.approx(
        train_flops_per_s / (row['devices'] * 0.5e12))
    assert row['peak_memory_bytes'] > 0 and row['recompiles'] == 0
    assert 0 < row['xla_temp_bytes'] < row['xla_memory_bytes']
    assert row['compile_s'] > 0 and f'{row["name"]}: train step compiled in' in result.stderr
    assert row['fast_malloc'] is True  # the script re-exec'd itself with the tunables
    assert row['profile_top_ops'] and {'op', 'ms_per_step', 'shape', 'jax_op'} == set(
        row['profile_top_ops'][0])
    assert (tmp_path / 'profile' / row['name']).is_dir()
  dense = rows[0]
  assert dense['speedup_vs_dense'] == 1.0 and dense['eval_ms_median'] > 0
  assert rows[1]['flops_per_token'] < dense['flops_per_token']
  assert rows[-1]['eval_ms_median'] is None and rows[-1]['dropout'] == 0.0
  with open(tmp_path / 'rows.csv') as f:
    table = list(csv.DictReader(f))
  assert [r['kind'] for r in table] == [r['kind'] for r in rows]
  assert float(table[0]['tokens_per_s']) == pytest.approx(dense['tokens_per_s'])
  assert (tmp_path / 'rows.png').stat().st_size > 0


def test_published_peak_is_looked_up_by_device_kind_and_dtype(repo_root):
  step_time = load_script(repo_root, 'step_time')
  assert step_time.published_peak('NVIDIA H200', 'bfloat16', 0) == 989.4e12
  assert step_time.published_peak('NVIDIA H100 80GB HBM3', 'float32', 0) == 66.9e12
  assert step_time.published_peak('TPU v5 lite', 'bfloat16', 0) == 197e12
  assert step_time.published_peak('cpu', 'float32', 0) is None
  assert step_time.published_peak('cpu', 'float32', 2.0) == 2e12


def test_step_time_sweeps_the_vocabulary_with_per_vocabulary_speedups(repo_root, tmp_path):
  out = tmp_path / 'vocab.json'
  shape = [a for a in TINY if not a.startswith(('--vocab_size', '--eval_steps'))]
  result = subprocess.run(
      [sys.executable, str(repo_root / 'benchmarks' / 'step_time.py'), *shape,
       '--vocab_sizes=256,2048', '--kinds=dense,svd', '--ranks=4', '--steps=2', '--rounds=1',
       '--eval_steps=0', '--head_chunk_rows=32', f'--out={out}', '--plot'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert [(r['name'], r['vocab_size']) for r in rows] == [
      ('dense@256', 256), ('svd4@256', 256), ('dense@2048', 2048), ('svd4@2048', 2048)]
  assert [r['speedup_vs_dense'] for r in rows[::2]] == [1.0, 1.0]
  assert {r['eval_ms_median'] for r in rows} == {None}  # --eval_steps=0: no eval step
  assert {r['head_chunk_rows'] for r in rows} == {32}
  dense_small, dense_large = rows[0], rows[2]
  assert dense_large['flops_output_head'] == 8 * dense_small['flops_output_head']
  assert dense_large['xla_temp_bytes'] > dense_small['xla_temp_bytes']
  assert out.with_suffix('.png').stat().st_size > 0


def test_memory_only_reports_the_train_steps_temporaries_without_timing(repo_root, tmp_path):
  out = tmp_path / 'memory.json'
  shape = [a for a in TINY if not a.startswith(('--vocab_size', '--eval_steps', '--batch'))]
  result = subprocess.run(  # 512 rows, V=16,384: 32 MiB of logits; chunks of 32 rows
      [sys.executable, str(repo_root / 'benchmarks' / 'step_time.py'), *shape,
       '--batch_size=32', '--vocab_sizes=16384', '--kinds=dense', '--head_chunk_rows=32',
       '--remat',
       '--memory_only', f'--out={out}'], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads(out.read_text())
  assert (row['name'], row['head_chunk_rows'], row['remat']) == ('dense', 32, True)
  assert 'step_ms_median' not in row and 'temp / BxLxV' in result.stdout
  assert 0 < row['xla_temp_bytes'] < row['logits_bytes'] / 2


def test_a_kinds_own_fields_reach_its_rows_and_name_them(repo_root):
  step_time = load_script(repo_root, 'step_time')
  args = step_time.parse_args([*TINY, '--kinds=dense,dpq', '--ranks=8', '--model_dim=32',
                               '--embed=dpq_groups=4'])
  assert args.embed == {'dpq_groups': 4}
  assert step_time.make_config(args, 'dpq', 8).model.embed.dpq_groups == 4
  assert (step_time.row_suffix(args, 'dpq'), step_time.row_suffix(args, 'dense')) == (
      '_dpq_groups4', '')
  with pytest.raises(SystemExit):  # a field no kind of --kinds has
    step_time.parse_args([*TINY, '--kinds=dense', '--embed=dpq_groups=4'])


def test_reference_step_runs_standalone(repo_root):
  result = subprocess.run(
      [sys.executable, str(repo_root / 'benchmarks' / 'reference_step.py'), *TINY[:6],
       '--steps=3'], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'tokens/s' in result.stdout


def test_reference_is_the_projects_dense_model(repo_root):
  """Same parameters in, same logits and loss out: the reference does the same maths."""
  reference_step = load_script(repo_root, 'reference_step')
  config = brown.get_config('runlocal')
  config.model.dropout = 0.0
  vocab_size = 300
  model = model_lib.TransformerLM(build.model_args(config, vocab_size), rngs=nnx.Rngs(params=0))
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  blocks = [{
      'ln1_scale_D': b['attn_norm']['scale'], 'ln1_bias_D': b['attn_norm']['bias'],
      'qkv_Dx3D': b['qkv']['kernel'], 'qkv_3D': b['qkv']['bias'],
      'out_DxD': b['attn_out']['kernel'], 'out_D': b['attn_out']['bias'],
      'ln2_scale_D': b['mlp_norm']['scale'], 'ln2_bias_D': b['mlp_norm']['bias'],
      'in_DxM': b['mlp_in']['kernel'], 'in_M': b['mlp_in']['bias'],
      'mlp_out_MxD': b['mlp_out']['kernel'], 'mlp_out_D': b['mlp_out']['bias'],
  } for _, b in sorted(p['blocks'].items())]
  params = {'W_VxD': p['embed']['W_VxD'], 'blocks': blocks,
            'lnf_scale_D': p['final_norm']['scale'], 'lnf_bias_D': p['final_norm']['bias']}
  # Same shapes as reference_step.init_params builds.
  fresh = reference_step.init_params(
      jax.random.key(0), vocab_size=vocab_size, model_dim=config.model.model_dim,
      num_layers=config.model.num_layers, mlp_dim=config.model.mlp_dim)
  assert jax.tree.map(jnp.shape, fresh) == jax.tree.map(jnp.shape, params)
  batch = reference_step.synthetic_batch(vocab_size, 4, config.data.seq_len)
  expected = model(jnp.asarray(batch['inputs']))
  logits = reference_step.forward(params, jnp.asarray(batch['inputs']), config.model.num_heads)
  np.testing.assert_allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_project_to_vocab_gradients_match_autodiff(dtype):
  """Its custom VJP (the table's gradient as (h^T g)^T, for speed) changes no number that
  matters: the same gradients, dtypes and shapes as autodiff of the plain einsum."""
  k_h, k_t, k_g = jax.random.split(jax.random.key(0), 3)
  h_BxLxK = jax.random.normal(k_h, (2, 5, 8)).astype(dtype)
  table_VxK = jax.random.normal(k_t, (50, 8))
  g_BxLxV = jax.random.normal(k_g, (2, 5, 50))

  def plain(h_BxLxK, table_VxK):
    return jnp.einsum('...k,vk->...v', h_BxLxK, table_VxK.astype(h_BxLxK.dtype),
                      preferred_element_type=jnp.float32)

  def grads(project):
    return jax.jit(jax.grad(lambda h, t: (project(h, t) * g_BxLxV).sum(), argnums=(0, 1)))(
        h_BxLxK, table_VxK)

  ours = embeddings.project_to_vocab(h_BxLxK, table_VxK)
  assert ours.dtype == jnp.float32
  np.testing.assert_array_equal(ours, plain(h_BxLxK, table_VxK))
  for got, want in zip(grads(embeddings.project_to_vocab), grads(plain), strict=True):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-5, atol=1e-5)
