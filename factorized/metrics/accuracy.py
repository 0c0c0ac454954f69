"""accuracy: next-token top-1 accuracy, the share of tokens whose target has the largest
logit (a tie counts as correct: float32 logits tie with probability zero in practice)."""

from __future__ import annotations

import jax.numpy as jnp

from factorized.metrics import TokenStats, register


def _report(total: float, tokens: float) -> dict:
  return {'accuracy': float(total / tokens) if tokens else None}


@register('accuracy', report=_report)
def per_token(stats: TokenStats):
  return (stats['target_logit'] >= stats['max_logit']).astype(jnp.float32)
