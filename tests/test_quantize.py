"""Quantized vocabulary tables: the maths (factorized/embeddings/quantize.py), the bytes
summary.json reports, quantization-aware training and post-training quantization."""

import json
import math
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
from factorized.config.build import model_args
from factorized.embeddings import dpq, quantize
from factorized.evaluation import posthoc_quant
from factorized.evaluation import saved as eval_run
from factorized.model import costs
from factorized.model import loss as loss_lib
from factorized.model import transformer as model_lib
from factorized.runtime import parallel
from factorized.train import trainer
from tests.test_embeddings import skewed_counts
from tests.test_train_cli import cli_env
from tests.test_trainer import scalar_series

VOCAB = 97
# (bits, group) of every precision the tests sweep: float32, per row, per group of columns.
PRECISIONS = [(0, 0), (8, 0), (4, 0), (8, 2), (4, 4)]
HEADS = [('tied', 'dense'), ('untied', 'dense'), ('untied', 'svd')]


def model_config(kind, head='tied', head_kind='dense', bits=0, group=0, rank=8):
  """config.model of configs/brown.py:runlocal with these embedding fields."""
  config = brown.get_config(f'runlocal,kind={kind},rank={rank},head={head},head_kind={head_kind}')
  config.model.embed.update(quant_bits=bits, quant_group=group)
  return config


def build_model(config):
  return model_lib.TransformerLM(model_args(build.from_config(config), VOCAB),
                                 rngs=nnx.Rngs(0), token_counts=skewed_counts(VOCAB))


@pytest.mark.parametrize('bits', [8, 4])
@pytest.mark.parametrize('shape,group', [((13, 12), 0), ((13, 12), 4), ((3, 5, 4, 2), 0),
                                         ((3, 5, 4, 2), 2)])
def test_dequantized_values_are_within_half_a_scale_step(shape, group, bits):
  rng = np.random.default_rng(bits + group)
  w = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.01, 3, size=shape[:1] + (1,) * (
      len(shape) - 1)).astype(np.float32)
  rows, columns = quantize.matrix_shape(shape)
  w.reshape(rows, columns)[1] = 0.0  # a row of zeros: scale 0, integers 0
  q, s = quantize.quantize(w, bits, group)
  assert q.dtype == jnp.int8 and q.shape == shape
  assert s.dtype == jnp.float32 and s.shape == (rows, columns // (group or columns))
  assert int(jnp.max(jnp.abs(q))) == quantize.qmax(bits)  # the grid is used to its end ...
  assert -quantize.qmax(bits) <= int(jnp.min(q))  # ... and symmetric: int4 in -7..7
  w_NxKxG = w.reshape(rows, s.shape[1], -1)
  s_NxK = np.abs(w_NxKxG).max(-1) / np.float32(quantize.qmax(bits))  # the docstring's formulas
  np.testing.assert_array_equal(np.asarray(s), s_NxK)
  with np.errstate(invalid='ignore'):
    q_NxKxG = np.nan_to_num(np.round(w_NxKxG / s_NxK[..., None]))
  np.testing.assert_array_equal(np.asarray(q).reshape(w_NxKxG.shape), q_NxKxG)
  error_NxKxG = np.abs(w - np.asarray(quantize.dequantize(q, s))).reshape(w_NxKxG.shape)
  assert np.all(error_NxKxG <= np.asarray(s)[..., None] / 2 * (1 + 1e-6))
  assert not np.asarray(q).reshape(rows, -1)[1].any()
  packed = quantize.pack(q, bits)
  assert packed.dtype == np.uint8 and packed.nbytes == math.ceil(math.prod(shape) * bits / 8)
  np.testing.assert_array_equal(quantize.unpack(packed, bits, shape), np.asarray(q))


def test_the_straight_through_gradient_is_the_gradient_at_the_quantized_values():
  w = jax.random.normal(jax.random.key(0), (6, 8))
  c = jax.random.normal(jax.random.key(1), (6, 8))

  def f(v):  # a nonlinear function, so the gradient depends on where it is taken
    return jnp.sum(jnp.sin(3 * v) * c)

  w_q = quantize.dequantize(*quantize.quantize(w, 4, 4))
  np.testing.assert_array_equal(quantize.fake_quantize(w, 4, 4), w_q)  # exactly w'
  ste = jax.grad(lambda v: f(quantize.fake_quantize(v, 4, 4)))(w)
  np.testing.assert_array_equal(ste, jax.grad(f)(w_q))
  # ... which is the gradient of w + stop_gradient(w' - w).
  np.testing.assert_allclose(ste, jax.grad(lambda v: f(v + jax.lax.stop_gradient(w_q - v)))(w),
                             rtol=1e-6)


@pytest.mark.parametrize('kind', embeddings.KINDS)
def test_qat_gradients_are_the_gradients_at_the_quantized_tables(kind):
  """Every parameter's gradient under QAT equals the float model's at w' = q s: the lookup
  and the head see w', and the table's gradient passes straight through."""
  head = ('untied', 'dense') if kind == 'svd' else ('tied', 'dense')
  qat = build_model(model_config(kind, *head, bits=4))
  plain = build_model(model_config(kind, *head))
  ids = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (2, 8)), jnp.int32)

  def grads(model, params):
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return jax.value_and_grad(lambda p: loss_lib.model_nll_sum(
        nnx.merge(graphdef, p, rest), ids, ids))(params)

  value, qat_grads = grads(qat, nnx.state(qat, nnx.Param))
  quantized = posthoc_quant.quantized_params(plain, 4)
  expected_value, expected = grads(plain, quantized)
  assert float(value) == float(expected_value)
  changed = 0
  for (path, got), (_, want) in zip(nnx.to_flat_state(qat_grads), nnx.to_flat_state(expected),
                                    strict=True):
    np.testing.assert_array_equal(got[...], want[...], err_msg=str(path))
  for (path, w), (_, w_q) in zip(nnx.to_flat_state(nnx.state(qat, nnx.Param)),
                                 nnx.to_flat_state(quantized), strict=True):
    changed += path[0] in ('embed', 'head') and not np.array_equal(w[...], w_q[...])
  assert changed >= (1 if kind in ('dense', 'dpq') else 2)  # the tables were quantized (dpq: one)


def stored_bytes(model, bits, group):
  """Bytes of the model's vocabulary parameters as they are stored: the packed integers
  and float32 scales `quantize` makes of each table matrix, 4 a value of the rest, split
  as costs.py does (a tied head's own parameters, ALBERT's MLM head, are the head's)."""
  found = {'embedding': 0, 'output_head': 0}
  for name in ('embed', 'head'):
    module = getattr(model, name)
    if module is None:
      continue
    quantized = quantize.quantize_tables(module, bits, group) if bits else {}
    for q, s in quantized.values():
      found['embedding' if name == 'embed' else 'output_head'] += (
          quantize.pack(q, bits).nbytes + np.asarray(s).nbytes)
    part = 'embedding' if name == 'embed' else 'output_head'
    if isinstance(module, dpq.DPQEmbedding):  # its packed codes; Q and the keys train only
      found[part] += dpq.pack_codes(module.codes(), module.values_KxD.shape[0]).nbytes
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
      if path[0] in getattr(module, 'TRAINING_ONLY', ()):
        continue
      if path not in quantized:
        part = 'embedding' if name == 'embed' and not path[0].startswith('mlm') else 'output_head'
        found[part] += np.asarray(variable[...], np.float32).nbytes
  return found


@pytest.mark.parametrize('bits,group', PRECISIONS)
@pytest.mark.parametrize('head,head_kind', HEADS)
@pytest.mark.parametrize('kind', [*embeddings.KINDS, 'albert_transpose'])
def test_the_bytes_of_every_kind_are_those_of_its_stored_arrays(kind, head, head_kind, bits,
                                                                 group):
  config = model_config(kind.split('_')[0], head, head_kind, bits, group)
  if kind == 'albert_transpose':
    config.model.embed.albert_head = 'transpose'
  if kind == 'adaptive' and group:  # a band 1 wide: every group but 1 is refused
    config.model.embed.band_widths = (8, 4, 4)
  spec = build.from_config(config)
  model = build_model(config)
  expected = costs.vocab_bytes(model_args(spec, VOCAB))
  assert stored_bytes(model, bits, group) == {k: expected[k] for k in ('embedding',
                                                                       'output_head')}
  assert expected['vocab'] == expected['embedding'] + expected['output_head']
  params = costs.param_counts(model_args(spec, VOCAB))
  if not bits:
    codes = model_args(spec, VOCAB).embed.code_bytes()  # dpq's packed codes
    assert expected == {'embedding': 4 * params['embedding'] + codes,
                        'output_head': 4 * params['output_head'],
                        'vocab': 4 * params['vocab'] + codes}
  held = {(name, *path): shape for name in ('embed', 'head') if getattr(model, name)
          for path, shape in table_params(getattr(model, name)).items()}
  assert model_args(spec, VOCAB).table_shapes() == held  # the kinds' formulas


def table_params(module) -> dict[tuple, tuple[int, ...]]:
  """{path: shape} of the parameters the module's TABLE_PARAMS name, as it holds them."""
  entries = [(e,) if isinstance(e, str) else tuple(e) for e in module.TABLE_PARAMS]
  return {path: variable.shape
          for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))
          if any(path[:len(entry)] == entry for entry in entries)}


def test_int8_dense_tables_take_about_a_quarter_of_their_float_bytes():
  def vocab_bytes(config):
    return costs.vocab_bytes(model_args(build.from_config(config), VOCAB))['vocab']

  float_bytes = vocab_bytes(model_config('dense'))
  int8 = vocab_bytes(model_config('dense', bits=8))
  int4 = vocab_bytes(model_config('dense', bits=4, group=8))
  dim = 32  # runlocal's model_dim: V D values, V scales (int8) or V D / 8 (int4, groups of 8)
  assert (float_bytes, int8, int4) == (4 * VOCAB * dim, VOCAB * dim + 4 * VOCAB,
                                       VOCAB * dim // 2 + 4 * VOCAB * dim // 8)


@pytest.mark.parametrize('fields,message', [
    ({'quant_bits': 3}, 'model.embed.quant_bits=3 is not a bit width: use 8 (int8), 4 (int4) '
                        'or 0 (float32 tables).'),
    ({'quant_bits': 8, 'quant_group': -4}, 'model.embed.quant_group=-4 must be an integer >= 0'),
    ({'quant_group': 4}, 'model.embed.quant_group=4 needs quantized tables: set '
                         'model.embed.quant_bits=8 or 4, or quant_group=0.'),
])
def test_a_bad_quant_field_is_refused_before_the_data_in_one_line(fields, message):
  config = model_config('svd')
  config.model.embed.update(fields)
  with pytest.raises(ValueError) as error:
    build.from_config(config)
  assert str(error.value).startswith(message) and '\n' not in str(error.value)


def test_a_group_that_does_not_divide_a_table_is_refused_before_the_model_is_built():
  config = model_config('svd', bits=4, group=3)  # R = 8 and D = 32 columns
  with pytest.raises(ValueError) as error:
    model_args(build.from_config(config), VOCAB)
  assert str(error.value) == (
      'model.embed.quant_group=3 does not divide the 8 columns of the table embed.U_VxR '
      "(97, 8): use a divisor of every table's columns ([1, 2, 4, 8]), or 0 (one scale per "
      'row).')


def test_a_bad_quant_field_on_the_command_line_is_one_line_and_exit_code_2(tmp_path,
                                                                          repo_root):
  result = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/brown.py:runlocal', f'--workdir={tmp_path}',
       '--config.model.embed.quant_bits=2'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip() == ('error: model.embed.quant_bits=2 is not a bit width: use 8 '
                                   '(int8), 4 (int4) or 0 (float32 tables).')
  assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('kind,head', [('tt', 'tied'), ('adaptive', 'untied')])
def test_a_qat_run_trains_restores_and_scores_its_stored_integers_and_scales(
    kind, head, tiny_config, tmp_path):
  tiny_config.model.embed.update(kind=kind, head=head, quant_bits=4)
  one = parallel.make_mesh(jax.devices()[:1])
  spec = build.from_config(tiny_config)
  summary = trainer.train_and_evaluate(spec, str(tmp_path), mesh=one)
  losses = [value for _, value in scalar_series(tmp_path, 'train/loss')]
  assert losses[-1] < losses[0] - 0.3
  assert summary['bytes'] == costs.vocab_bytes(model_args(spec, summary['vocab_size']))
  assert summary['bytes']['vocab'] < 4 * summary['params']['vocab'] / 3
  run, step = eval_run.restore_run(str(tmp_path), 'best', mesh=one)
  assert step == summary['best_step']
  # The float32 tables as trained, quantized and stored (integers, scales), dequantized by
  # hand into the parameters of the same model without quantization.
  params = jax.device_get(nnx.to_pure_dict(run.state.params))
  model = run.model()
  for name in ('embed', 'head'):
    for path, (q, s) in quantize.quantize_tables(getattr(model, name), 4).items():
      tree = params[name]
      for key in path[:-1]:
        tree = tree[key]
      w_q = np.asarray(q, np.float32).reshape(*s.shape, -1) * np.asarray(s)[..., None]
      tree[path[-1]] = w_q.reshape(q.shape)
  plain = posthoc_quant.plain_run(run)
  state = nnx.state(plain.model(), nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  stored = plain.evaluator('test')(jax.device_put(state, parallel.replicated(one)))
  assert stored['ppl'] == summary['test_ppl']


def test_eval_cli_quantizes_a_trained_run_and_writes_ppl_and_bytes(tiny_config, tmp_path,
                                                                 repo_root):
  tiny_config.model.embed.update(kind='svd', head='untied')
  spec = build.from_config(tiny_config)
  summary = trainer.train_and_evaluate(spec, str(tmp_path))
  result = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={tmp_path}', '--split=test', '--quant_bits=8,4',
       '--quant_group=4'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((tmp_path / 'posthoc_quant_test.json').read_text())
  assert written == json.loads(result.stdout)
  assert written['method'] == 'posthoc_quant' and written['group'] == 4
  np.testing.assert_allclose(written['trained_ppl'], summary['test_ppl'], rtol=1e-6)
  assert written['trained_bytes'] == summary['bytes']
  ratios = {bits: written['ppl_by_bits'][bits] / summary['test_ppl'] for bits in ('8', '4')}
  assert abs(math.log(ratios['8'])) < 0.01 and abs(math.log(ratios['4'])) < 0.3, ratios
  vocab = summary['vocab_size']
  for bits in (8, 4):
    config = posthoc_quant.quant_config(spec, bits, 4)
    assert written['bytes_by_bits'][str(bits)] == costs.vocab_bytes(model_args(config, vocab))
    assert set(written['bands_ppl_by_bits'][str(bits)]) == set(summary['test_bands'])
  assert written['bytes_by_bits']['4']['vocab'] < written['bytes_by_bits']['8']['vocab'] < (
      summary['bytes']['vocab'])
  bad = subprocess.run(
      [sys.executable, 'eval.py', f'--workdir={tmp_path}', '--quant_bits=8', '--quant_group=3'],
      cwd=repo_root, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().startswith(
      'error: --quant_group=3 does not divide the 8 columns of the table embed.U_VxR')
