r"""Evaluation metrics as plug-ins: a per-token value, summed by the evaluator, named.

A metric is one module of this package: a function of the per-token statistics the loss
gives in evaluation (`loss.model_token_stats`: `nll`, `max_logit`, `target_logit`, float32
BxL) to a float32 BxL value, registered with `@register(name, report=...)`. The evaluator
sums every registered metric's values over the split's tokens (and over each frequency
band's) and `report(total, tokens)` turns a sum into the named numbers every consumer reads
(eval JSON, summary.json, TensorBoard, summary.csv): adding a metric is adding its file
(and its test) and its line below (tests/test_docs.py checks the lines against `metrics()`).

  nll       the token NLL: loss (mean) and ppl = exp(loss)       nll.py
  accuracy  next-token top-1 accuracy                            accuracy.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from factorized import plugins

TokenStats = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Metric:
  """A registered metric: `per_token(stats) -> values_BxL`, and `report(total, tokens) ->
  {name: number}` of a sum over tokens (None values for a band without tokens)."""
  name: str
  per_token: Callable[[TokenStats], jax.Array]
  report: Callable[[float, float], dict[str, float | None]]
  order: int


_REGISTRY: dict[str, Metric] = {}


def register(name: str, *, report: Callable[[float, float], dict], order: int = 100):
  """Decorator: registers `per_token(stats) -> values_BxL` as metric `name`."""

  def add(per_token: Callable[[TokenStats], jax.Array]):
    if name in _REGISTRY:
      raise ValueError(f'Two metrics are named {name!r}.')
    _REGISTRY[name] = Metric(name, per_token, report, order)
    return per_token

  return add


def metrics() -> tuple[Metric, ...]:
  """Every registered metric, `nll` first (the order of the evaluator's sums)."""
  return tuple(sorted(_REGISTRY.values(), key=lambda metric: (metric.order, metric.name)))


def report(totals: list[float], tokens: float) -> dict[str, float | None]:
  """Every metric's named numbers from its sum over `tokens` tokens (in `metrics()` order)."""
  result = {}
  for metric, total in zip(metrics(), totals, strict=True):
    result.update(metric.report(total, tokens))
  return result


def reported_names() -> tuple[str, ...]:
  """The names every metric reports (loss, ppl, accuracy, ...), in `metrics()` order."""
  return tuple(name for metric in metrics() for name in metric.report(1.0, 1.0))


plugins.import_all(__name__, __path__)  # every module registers itself
