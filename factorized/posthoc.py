r"""Post-hoc SVD compression of a trained dense embedding, without retraining.

Shapes: V vocabulary, D model width, R rank.

`posthoc_svd(workdir, split, ranks)` restores a trained `dense` run and, for each rank R,
builds the `svd` model whose U s V is the best rank-R approximation of the trained table
W_VxD (its truncated SVD, Eckart-Young: embeddings.svd_factors_from_dense) and whose other
parameters (blocks, final LayerNorm, an untied head) are the dense run's, then scores it
with the same exact Evaluator as training. With the tied head, the head is replaced too
(logits = x (U s V)^T); an untied head is kept, so only the input embedding is compressed.
At R = min(V, D) the model equals the dense one up to float32 rounding.

Fine-tuning (`finetune_steps=N`): N steps of the normal train step on each SVD-initialised
model, continuing the dense run's data stream from where its training stopped (the
batches its next steps would have drawn). AdamW starts afresh, with the dense run's
training config except: peak learning rate = its final one (train.lr * min_lr_ratio),
warm-up over the first N // 10 steps, then cosine decay over the N steps.

Results: workdir/posthoc_svd_<split>.json, {"split", "dense_ppl", "ppl_by_rank": {"8": ...},
"params_by_rank", "step", "checkpoint", "head", "replaced"} plus, after fine-tuning,
"finetune_steps" and "finetuned_ppl_by_rank" (rewritten by each call); TensorBoard
scalars posthoc_svd/<split>_ppl (and posthoc_svd_finetuned/<split>_ppl) with step = rank
in the dense run's workdir; and, when the workdir is a sweep point, the sweep's reports
are rewritten to include the rows.
"""

from __future__ import annotations

import copy
import logging
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from factorized import costs, eval_run, optim, parallel, sweep_report, trainer
from factorized import data as data_lib
from factorized import model as model_lib
from factorized import workdir as workdir_lib
from factorized.metric_writer import MetricWriter
from factorized.step import ModelParts, TrainState, make_train_step

log = logging.getLogger(__name__)
POSTHOC_FILE = sweep_report.POSTHOC_FILE


def svd_config(config: ml_collections.ConfigDict, rank: int) -> ml_collections.ConfigDict:
  """The dense run's config with an `svd` embedding of rank `rank` (no orthogonality penalty)."""
  config = copy.deepcopy(config)
  config.model.embed.kind = 'svd'
  config.model.embed.rank = int(rank)
  config.model.embed.ortho_penalty = 0.0
  return config


def finetune_train_config(train_config: ml_collections.ConfigDict,
                          steps: int) -> ml_collections.ConfigDict:
  """The fine-tuning schedule: the run's final lr as peak, N // 10 warm-up steps, N steps."""
  train_config = copy.deepcopy(train_config)
  train_config.lr = train_config.lr * train_config.min_lr_ratio
  train_config.num_steps = int(steps)
  train_config.warmup_steps = int(steps) // 10
  optim.validate_train_config(train_config)
  return train_config


def svd_run_from_dense(dense: trainer.Run, rank: int, *,
                       train_config: ml_collections.ConfigDict | None = None) -> trainer.Run:
  """The Run of the svd model initialised from `dense`: truncated SVD of its table, its other
  parameters copied; a fresh optimizer state for `train_config` (default: the run's)."""
  if dense.config.model.embed.kind != 'dense':
    raise ValueError(f'Post-hoc SVD needs a dense run; this one has model.embed.kind='
                     f'{dense.config.model.embed.kind!r}.')
  config = svd_config(dense.config, rank)
  vocab_size = dense.corpus.vocab_size
  # Host copies: the new state owns its buffers (train steps donate them).
  dense_params = jax.device_get(nnx.to_pure_dict(dense.state.params))
  model = model_lib.build_model(config, vocab_size, rngs=nnx.Rngs(params=config.seed),
                                dense_table=dense_params['embed']['W_VxD'])
  graphdef, params, consts = nnx.split(model, nnx.Param, ...)
  pure = nnx.to_pure_dict(params)
  if set(pure) != set(dense_params):
    raise RuntimeError(f'svd model parameters {sorted(pure)} do not match the dense model '
                       f'{sorted(dense_params)}.')
  pure.update({name: value for name, value in dense_params.items() if name != 'embed'})
  nnx.replace_by_pure_dict(params, pure)
  replicated = parallel.replicated(dense.mesh)
  params, consts = jax.device_put((params, consts), replicated)
  optimizer = optim.make_optimizer(train_config or config.train)
  state = jax.jit(
      lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p),
                           rng=jax.random.key_data(jax.random.key(config.seed))),
      out_shardings=replicated)(params)
  return trainer.Run(config, dense.corpus, dense.mesh, ModelParts(graphdef, consts), state)


def finetune(run: trainer.Run, train_config: ml_collections.ConfigDict, *,
             data_step: int) -> TrainState:
  """`train_config.num_steps` train steps on `run` from the data position after `data_step`
  steps of `run.config.train.batch_size` rows; returns the final state (run.state is donated)."""
  config = run.config
  batches = data_lib.TrainBatches(
      run.corpus.splits['train'], seq_len=config.data.seq_len,
      global_batch_size=train_config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  rows = data_step * config.train.batch_size
  batches.set_state({'epoch': rows // batches.rows_per_epoch,
                     'index': rows % batches.rows_per_epoch})
  train_step = make_train_step(
      run.parts, optim.make_optimizer(train_config), optim.learning_rate_schedule(train_config),
      run.mesh, grad_accum_steps=train_config.grad_accum_steps)
  state, metrics = run.state, None
  for _ in range(train_config.num_steps):
    state, metrics = train_step(state, parallel.global_batch(next(batches), run.mesh))
  loss = float(jax.device_get(metrics['loss']))
  if not math.isfinite(loss):
    raise trainer.NonFiniteLoss(f'fine-tuning loss {loss} is not finite: use fewer '
                                '--svd_finetune_steps or a run with a lower train.lr.')
  return state


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
                checkpoint: str = 'latest', finetune_steps: int = 0,
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
  train_config = finetune_train_config(dense.config.train, finetune_steps) if finetune_steps \
      else None
  head = dense.config.model.embed.head
  result = {
      'split': split, 'step': step, 'checkpoint': checkpoint, 'head': head,
      'replaced': ('input embedding and tied output head' if head == 'tied'
                   else 'input embedding only (the untied output head is kept)'),
      'dense_ppl': dense.evaluator(split)(dense.state.params)['ppl'],
      'ppl_by_rank': {}, 'params_by_rank': {},
  }
  if finetune_steps:
    result.update(finetune_steps=int(finetune_steps), finetuned_ppl_by_rank={})
  for rank in ranks:
    run = svd_run_from_dense(dense, rank, train_config=train_config)
    counts = costs.param_counts(run.config, vocab_size)
    result['params_by_rank'][str(rank)] = {'embedding': counts['embedding'],
                                           'total': counts['total']}
    evaluator = run.evaluator(split)
    result['ppl_by_rank'][str(rank)] = evaluator(run.state.params)['ppl']
    message = f'rank {rank}: {split} ppl {result["ppl_by_rank"][str(rank)]:.3f}'
    if finetune_steps:
      state = finetune(run, train_config, data_step=step)
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
