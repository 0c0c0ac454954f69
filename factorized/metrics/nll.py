"""nll: the token negative log-likelihood; reported as `loss` (its mean over the tokens) and
`ppl` = exp(loss), perplexity over every token exactly once."""

from __future__ import annotations

import math

from factorized.metrics import TokenStats, register


def _report(total: float, tokens: float) -> dict:
  if not tokens:
    return {'loss': None, 'ppl': None}
  loss = total / tokens
  return {'loss': float(loss), 'ppl': float(math.exp(loss))}


@register('nll', report=_report, order=0)
def per_token(stats: TokenStats):
  return stats['nll']
