"""Exact evaluation: perplexity = exp(total NLL / total tokens), every token once.

The same Evaluator serves periodic evaluation in training and `eval.py`. Per-batch
sums are written on device into one [num_batches, 2] array (no host sync per batch)
and added up in float64 on the host at the end.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from factorized import data as data_lib
from factorized import parallel
from factorized.step import ModelParts, make_eval_step


class Evaluator:
  """Evaluates parameters on one split: token-weighted NLL, perplexity and word perplexity."""

  def __init__(
      self,
      parts: ModelParts,
      mesh: Mesh,
      tokens: np.ndarray,
      *,
      seq_len: int,
      batch_size: int,
      num_words: int | None = None,
  ):
    parallel.check_batch_size(batch_size, mesh, field='train.eval_batch_size')
    self.tokens = tokens
    self.seq_len = seq_len
    self.batch_size = batch_size
    self.num_words = num_words
    self.mesh = mesh
    self._eval_step = make_eval_step(parts, mesh)

  def __call__(self, params: nnx.State) -> dict[str, float]:
    """Returns loss (NLL per token), ppl, tokens and, given `num_words`, word_ppl."""
    batches = data_lib.eval_batches(
        self.tokens,
        seq_len=self.seq_len,
        global_batch_size=self.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    num_batches = data_lib.num_eval_batches(
        len(self.tokens), seq_len=self.seq_len, global_batch_size=self.batch_size)
    sums_Nx2 = jax.device_put(np.zeros((num_batches, 2), np.float32),
                              parallel.replicated(self.mesh))
    for index, batch in enumerate(batches):
      sums_Nx2 = self._eval_step(params, parallel.global_batch(batch, self.mesh), sums_Nx2,
                                 np.int32(index))
    nll_sum, token_count = np.asarray(jax.device_get(sums_Nx2), np.float64).sum(axis=0)
    if round(token_count) != len(self.tokens):
      raise RuntimeError(
          f'evaluation counted {token_count:.0f} tokens, the split has {len(self.tokens)}')
    loss = nll_sum / token_count
    result = {
        'loss': float(loss),
        'ppl': float(math.exp(loss)),
        'tokens': int(round(token_count)),
        'nll_sum': float(nll_sum),
    }
    if self.num_words:
      result['word_ppl'] = float(math.exp(nll_sum / self.num_words))
    return result
