"""factorized/metrics/: per-token metrics, summed by the evaluator and read by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorized import metrics
from factorized.config import build
from factorized.model import loss
from tests.test_loss import HEADS, batch, make_config, make_model


@pytest.mark.parametrize('chunk_rows', [0, 5])  # the plain loss, and chunks of rows
@pytest.mark.parametrize('kind,head,overrides', HEADS)
def test_top1_accuracy_is_the_argmax_of_the_logits_on_every_head_path(
    kind, head, overrides, chunk_rows):
  config = make_config(kind, head, chunk_rows, **overrides)
  if kind == 'dense':
    config.model.head_chunk_vocab = 7  # the table head's vocabulary slices
  model = make_model(config)
  inputs_BxL, targets_BxL = batch()
  stats = jax.jit(lambda i, t: loss.model_token_stats(model, i, t))(inputs_BxL, targets_BxL)
  (accuracy,) = [m for m in metrics.metrics() if m.name == 'accuracy']
  logits_BxLxV = np.asarray(model(inputs_BxL))
  expected = (logits_BxLxV.argmax(-1) == np.asarray(targets_BxL)).astype(np.float32)
  np.testing.assert_array_equal(accuracy.per_token(stats), expected)
  np.testing.assert_allclose(stats['nll'], loss.token_nll(jnp.asarray(logits_BxLxV),
                                                          targets_BxL), rtol=1e-5, atol=1e-5)


def test_the_evaluator_reports_every_metric_by_name_overall_and_per_band(tiny_config, tmp_path):
  from factorized.train import trainer

  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  run = trainer.build_run(build.from_config(tiny_config), str(tmp_path))
  valid = run.evaluator('valid')(run.state.params)
  assert {'loss', 'ppl', 'accuracy', 'tokens'} <= set(valid)
  assert all({'loss', 'ppl', 'accuracy', 'tokens'} <= set(b) for b in valid['bands'].values())
  # Token-weighted: the bands' accuracies average to the whole split's.
  bands = [b for b in valid['bands'].values() if b['tokens']]
  np.testing.assert_allclose(
      sum(b['accuracy'] * b['tokens'] for b in bands) / valid['tokens'], valid['accuracy'])
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert set(summary['test_bands']['1-100']) >= {'ppl', 'accuracy', 'tokens'}
  # The frequency classes partition the split's tokens too, and their NLL adds up to the
  # whole split's: a gap decomposes exactly into the classes' contributions.
  for grouping in ('bands', 'classes'):
    groups = [g for g in valid[grouping].values() if g['tokens']]
    assert sum(g['tokens'] for g in groups) == valid['tokens']
    np.testing.assert_allclose(sum(g['loss'] * g['tokens'] for g in groups), valid['nll_sum'],
                               rtol=1e-6)
  assert list(summary['test_classes']) == ['0', '1-3', '4-10', '11-100', '101+', '<unk>']
  # The frequent types (seen >= eval.frequent_count = 11 times in train) pooled as one group.
  frequent = [valid['classes'][name] for name in ('11-100', '101+')]
  assert valid['frequent']['tokens'] == sum(g['tokens'] for g in frequent)
  np.testing.assert_allclose(
      valid['frequent']['loss'] * valid['frequent']['tokens'],
      sum(g['loss'] * g['tokens'] for g in frequent if g['tokens']), rtol=1e-9)
  assert summary['test_frequent']['ppl'] > 0 and summary['valid_frequent']['tokens'] > 0
  assert summary['valid_classes'].keys() == summary['test_classes'].keys()
