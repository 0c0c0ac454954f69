"""Exact evaluation: perplexity = exp(total NLL / total tokens), every token once.

The same Evaluator serves periodic evaluation in training and `eval.py`. Each device's
per-batch sums of every registered metric (factorized/metrics/: the NLL, top-1 accuracy,
...) and of the token count are written on device into one [num_batches, devices, 1 +
bands, metrics + 1] array (no host sync per batch, no collective) and added up in float64
on the host at the end; each metric's `report` names the numbers. Besides the whole split,
it reports each metric per group of every grouping of the vocabulary it is given, with the
group's token count: the frequency bands of the target (`bands`, pipeline.frequency_bands:
its rank in train-split frequency) and its frequency classes (`classes`,
pipeline.frequency_classes: how often its type occurs in the train split), so a comparison
can show which words carry a gap.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from factorized import metrics as metrics_lib
from factorized.data import pipeline as data_lib
from factorized.runtime import parallel
from factorized.train import step as step_lib
from factorized.train.step import ModelParts, make_eval_step


def _result(sums_M: np.ndarray) -> dict:
  """Every metric's numbers (factorized/metrics/: loss, ppl, accuracy, ...) and the tokens
  of one row of the summed columns (the metrics', then the token count)."""
  tokens = float(sums_M[-1])
  return {**metrics_lib.report(list(sums_M[:-1]), tokens), 'tokens': int(round(tokens))}


class Evaluator:
  """Evaluates parameters on one split: token-weighted NLL, perplexity, band perplexities
  and, given `num_words`, word perplexity."""

  def __init__(
      self,
      parts: ModelParts,
      mesh: Mesh,
      tokens: np.ndarray,
      *,
      seq_len: int,
      batch_size: int,
      num_words: int | None = None,
      groups: dict[str, tuple[np.ndarray, list[str]]] | None = None,
      pooled: dict[str, tuple[str, list[str]]] | None = None,
      stride: int | None = None,
  ):
    parallel.check_batch_size(batch_size, mesh, field='train.eval_batch_size')
    self.tokens = tokens
    self.seq_len = seq_len
    self.stride = seq_len if stride is None else stride
    self.batch_size = batch_size
    self.num_words = num_words
    self.mesh = mesh
    # name -> (the group of every token id, int32 V; the groups' names)
    self.groups = dict(groups or {})
    # result name -> (a grouping, the names of its groups reported together as one)
    self.pooled = dict(pooled or {})
    # Checks the stride now, before anything is compiled.
    self.num_batches = data_lib.num_eval_batches(
        len(tokens), seq_len=seq_len, global_batch_size=batch_size, stride=self.stride)
    self._eval_step = make_eval_step(
        parts, mesh, {name: len(names) for name, (_, names) in self.groups.items()})

  def __call__(self, params: nnx.State) -> dict:
    """Returns every metric's numbers (loss: NLL per token, ppl, accuracy, ...), tokens,
    nll_sum, stride, per grouping (`bands`, `classes`) {group: the same numbers}, the same
    numbers of each pooled set of groups (`frequent`) and, given `num_words`, word_ppl."""
    batches = data_lib.eval_batches(
        self.tokens,
        seq_len=self.seq_len,
        global_batch_size=self.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        stride=self.stride,
    )
    num_groups = sum(len(names) for _, names in self.groups.values())
    sums_NxDxKxM = step_lib.eval_sums(self.num_batches, num_groups, self.mesh)
    for index, batch in enumerate(batches):
      for name, (group_V, _) in self.groups.items():
        batch[name] = group_V[batch['targets']]
      sums_NxDxKxM = self._eval_step(params, parallel.global_batch(batch, self.mesh),
                                     sums_NxDxKxM, np.int32(index))
    sums_KxM = step_lib.total_eval_sums(sums_NxDxKxM)
    nll_sum, token_count = sums_KxM[0, 0], sums_KxM[0, -1]
    if round(token_count) != len(self.tokens):
      raise RuntimeError(
          f'evaluation counted {token_count:.0f} tokens, the split has {len(self.tokens)}')
    result = {**_result(sums_KxM[0]), 'nll_sum': float(nll_sum), 'stride': self.stride}
    row, rows = 1, {}
    for grouping, (_, names) in self.groups.items():
      rows[grouping] = {name: sums_KxM[row + g] for g, name in enumerate(names)}
      result[grouping] = {name: _result(sums_M) for name, sums_M in rows[grouping].items()}
      row += len(names)
    for name, (grouping, members) in self.pooled.items():
      result[name] = _result(sum(rows[grouping][member] for member in members))
    if self.num_words:
      result['word_ppl'] = float(math.exp(nll_sum / self.num_words))
    return result
