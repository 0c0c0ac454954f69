r"""Post-hoc SVD compression of a trained dense embedding, without retraining.

Shapes: V vocabulary, D model width, R rank.

`posthoc_svd(workdir, split, ranks)` restores a trained `dense` run (by default the
checkpoint that its summary's test_ppl uses: the best by valid perplexity) and, for each
rank R, builds the `svd` model whose U s V is the best rank-R approximation of the trained
table W_VxD (its truncated SVD, Eckart-Young, split between U and V so that Adam moves it
as fast as a dense table: embeddings.py) and whose other parameters (blocks, final
LayerNorm, an untied head) are the dense run's, then scores it with the same exact
Evaluator as training. With the tied head, the head is replaced too (logits = x (U s V)^T);
an untied head is kept, so only the input embedding is compressed. At R = min(V, D) the
model equals the dense one up to float32 rounding.

Fine-tuning (`finetune_steps=N`): N steps of the normal train step on each SVD-initialised
model, continuing the dense run's data stream from where its checkpoint stopped (the
batches its next steps would have drawn). AdamW starts afresh, with the dense run's
training config except: peak learning rate = its final one (train.lr * min_lr_ratio),
warm-up over the first N // 10 steps, then cosine decay over the N steps. The
compute-matched control: the dense model itself fine-tuned the same way
(`dense_finetuned_ppl`, rows `dense_ft<N>`), so that what the extra steps alone buy is
not credited to compression.

Results: workdir/posthoc_svd_<split>.json, {"split", "dense_ppl", "ppl_by_rank": {"8": ...},
"params_by_rank", "step", "checkpoint", "head", "replaced"} plus, after fine-tuning,
"finetune_steps", "finetuned_ppl_by_rank" and "dense_finetuned_ppl" (rewritten by each
call); TensorBoard scalars posthoc_svd/<split>_ppl (and posthoc_svd_finetuned/<split>_ppl)
with step = rank in the dense run's workdir; and, when the workdir is a sweep point, the
sweep's reports are rewritten to include the rows.
"""

from __future__ import annotations

import copy
import logging
import math
import os

import jax
import ml_collections
from flax import nnx

from factorized import costs, eval_run, optim, parallel, sweep_report, trainer
from factorized import workdir as workdir_lib
from factorized.metric_writer import MetricWriter

log = logging.getLogger(__name__)
POSTHOC_FILE = sweep_report.POSTHOC_FILE


def svd_config(config: ml_collections.ConfigDict, rank: int) -> ml_collections.ConfigDict:
  """The dense run's config with an `svd` embedding of rank `rank` (no orthogonality penalty)."""
  config = copy.deepcopy(config)
  config.model.embed.kind = 'svd'
  config.model.embed.rank = int(rank)
  config.model.embed.ortho_penalty = 0.0
  return config


def finetune_config(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """`config` with the fine-tuning schedule: the run's final lr as peak, N // 10 warm-up
  steps, N steps."""
  config = copy.deepcopy(config)
  train_config = config.train
  train_config.lr = train_config.lr * train_config.min_lr_ratio
  train_config.num_steps = int(steps)
  train_config.warmup_steps = int(steps) // 10
  optim.validate_train_config(train_config)
  return config


def run_from_dense(dense: trainer.Run, config: ml_collections.ConfigDict) -> trainer.Run:
  """The Run of `config` (the dense run's sizes; kind dense or svd) initialised from `dense`:
  its table (copied, or the split truncated SVD) and its other parameters; fresh optimizer."""
  if dense.config.model.embed.kind != 'dense':
    raise ValueError(f'Post-hoc SVD needs a dense run; this one has model.embed.kind='
                     f'{dense.config.model.embed.kind!r}.')
  # Host copies: the new state owns its buffers (train steps donate them).
  dense_params = jax.device_get(nnx.to_pure_dict(dense.state.params))
  parts, state = trainer.init_state(config, dense.corpus.vocab_size, dense.mesh,
                                    dense_params=dense_params, token_counts=dense.token_counts)
  return trainer.Run(config, dense.corpus, dense.mesh, parts, state, dense.token_counts)


def finetune(run: trainer.Run, *, data_step: int, rows_per_step: int) -> trainer.TrainState:
  """`run.config.train.num_steps` train steps on `run` from the data position after
  `data_step` steps of `rows_per_step` rows; returns the final state (run.state is donated)."""
  batches = run.train_batches()
  rows = data_step * rows_per_step
  batches.set_state({'epoch': rows // batches.rows_per_epoch,
                     'index': rows % batches.rows_per_epoch})
  train_step = run.train_step()
  state, metrics = run.state, None
  for _ in range(run.config.train.num_steps):
    state, metrics = train_step(state, parallel.global_batch(next(batches), run.mesh))
  loss = float(jax.device_get(metrics['loss']))
  if not math.isfinite(loss):
    raise trainer.NonFiniteLoss(f'fine-tuning loss {loss} is not finite: use fewer '
                                '--svd_finetune_steps or a run with a lower train.lr.')
  return state


def _budget(config: ml_collections.ConfigDict, vocab_size: int) -> dict[str, int]:
  counts = costs.param_counts(config, vocab_size)
  return {name: counts[name] for name in ('embedding', 'vocab', 'total')}


def parse_ranks(values: list[str]) -> list[int]:
  """The integers of --svd_ranks=8,16,32; a ValueError naming the flag otherwise."""
  try:
    return [int(value) for value in values]
  except ValueError:
    raise ValueError(f'--svd_ranks={",".join(values)}: expected integers, e.g. 8,16,32.') from None


def _check_ranks(ranks: list[int], limit: int) -> list[int]:
  if not ranks:
    raise ValueError('--svd_ranks is empty: give ranks, e.g. --svd_ranks=8,16,32.')
  bad = [rank for rank in ranks if not 1 <= rank <= limit]
  if bad:
    raise ValueError(f'--svd_ranks: {bad} outside [1, min(vocab_size, model_dim)={limit}]; '
                     'drop them.')
  return sorted(set(ranks))


def posthoc_svd(workdir: str, split: str = 'test', ranks: list[int] | tuple[int, ...] = (), *,
                checkpoint: str = 'best', finetune_steps: int = 0,
                mesh: jax.sharding.Mesh | None = None) -> dict:
  """Perplexity on `split` of a dense run's embedding truncated to each rank (see the module
  docstring); writes workdir/posthoc_svd_<split>.json and TensorBoard scalars."""
  if split not in ('valid', 'test'):
    raise ValueError(f'--split={split!r}: expected valid or test.')
  if finetune_steps < 0:
    raise ValueError(f'--svd_finetune_steps={finetune_steps} must be >= 0.')
  saved = workdir_lib.load_config(workdir)
  if saved.model.embed.kind != 'dense':
    raise ValueError(f'--svd_ranks compresses a dense run; {workdir} has model.embed.kind='
                     f'{saved.model.embed.kind!r} (train one with configs/brown.py:kind=dense).')
  dense, step = eval_run.restore_run(workdir, checkpoint, mesh=mesh)
  vocab_size = dense.corpus.vocab_size
  ranks = _check_ranks([int(r) for r in ranks], min(vocab_size, dense.config.model.model_dim))
  tuned = finetune_config(dense.config, finetune_steps) if finetune_steps else None
  rows_per_step = dense.config.train.batch_size
  head = dense.config.model.embed.head
  result = {
      'split': split, 'step': step, 'checkpoint': checkpoint, 'head': head,
      'replaced': ('input embedding and tied output head' if head == 'tied'
                   else 'input embedding only (the untied output head is kept)'),
      'dense_ppl': dense.evaluator(split)(dense.state.params)['ppl'],
      'dense_params': _budget(dense.config, vocab_size),
      'ppl_by_rank': {}, 'params_by_rank': {},
  }
  if finetune_steps:
    control = run_from_dense(dense, tuned)
    state = finetune(control, data_step=step, rows_per_step=rows_per_step)
    result.update(finetune_steps=int(finetune_steps), finetuned_ppl_by_rank={},
                  dense_finetuned_ppl=control.evaluator(split)(state.params)['ppl'])
    log.info('Dense control of %s after %d fine-tuning steps: %s ppl %.3f.', workdir,
             finetune_steps, split, result['dense_finetuned_ppl'])
  for rank in ranks:
    run = run_from_dense(dense, svd_config(tuned or dense.config, rank))
    result['params_by_rank'][str(rank)] = _budget(run.config, vocab_size)
    evaluator = run.evaluator(split)
    result['ppl_by_rank'][str(rank)] = evaluator(run.state.params)['ppl']
    message = f'rank {rank}: {split} ppl {result["ppl_by_rank"][str(rank)]:.3f}'
    if finetune_steps:
      state = finetune(run, data_step=step, rows_per_step=rows_per_step)
      result['finetuned_ppl_by_rank'][str(rank)] = evaluator(state.params)['ppl']
      message += (f', after {finetune_steps} fine-tuning steps '
                  f'{result["finetuned_ppl_by_rank"][str(rank)]:.3f}')
    log.info('Post-hoc SVD of %s, %s (dense %.3f).', workdir, message, result['dense_ppl'])
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, POSTHOC_FILE.format(split=split)), result)
    writer = MetricWriter(workdir)
    try:
      for rank in ranks:
        values = {f'posthoc_svd/{split}_ppl': result['ppl_by_rank'][str(rank)]}
        if finetune_steps:
          values[f'posthoc_svd_finetuned/{split}_ppl'] = (
              result['finetuned_ppl_by_rank'][str(rank)])
        writer.scalars(rank, values)
    finally:
      writer.close()
    sweep_report.refresh_parent_reports(workdir)
  return result
