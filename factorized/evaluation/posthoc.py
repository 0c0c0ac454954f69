r"""Post-hoc SVD compression of a trained dense embedding, without retraining.

Shapes: V vocabulary, D model width, R rank; V_b the ids of frequency band b, R_b its rank.

`posthoc_svd(workdir, split, ranks)` restores a trained `dense` run (by default the
checkpoint that its summary's test_ppl uses: the best by valid perplexity) and, for each
rank R, builds the `svd` model whose U s V is the best rank-R approximation of the trained
table W_VxD (its truncated SVD, Eckart-Young, split between U and V so that Adam moves it
as fast as a dense table: embeddings/svd.py) and whose other parameters (blocks, final
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

Frequency weighting (`weighting='frequency'`, the idea of GroupReduce, Chen et al. 2018):
instead of the truncated SVD, the rank-R matrix closest to W in the train-frequency-weighted
error sum_i f_i |W_i - What_i|^2 (f_i = the id's train count, train_counts.npy). With
F = diag(sqrt(f)) and F W = U S V^T, it is What = W V_R^T V_R: every row projected onto the
top R right singular vectors of F W (F What = (F W)_R, Eckart-Young; rows of weight 0, ids
never seen in train, projected alike). Uniform f gives the truncated SVD.

Bands (`bands=(c_1, c_2, ...)`, frequency ranks as adaptive's band_cutoffs): each band of
ids gets its own rank-R_b approximation (weighted, or plain), held by an `adaptive` model
(band_cutoffs = bands, band_widths = R_b), within the parameters of the rank-R svd model
(R (V + D + 1)): starting from R_b = 1, rank goes one unit at a time (V_b + D parameters) to
the band with the largest weighted error reduction per parameter, s_{b, R_b+1}^2 / (V_b + D),
so frequent bands, whose errors weigh more, get more rank than rare ones.

Results: workdir/<method>_<split>.json, <method> = posthoc_svd, posthoc_svd_freq (frequency
weighting), posthoc_svd_bands or posthoc_svd_freq_bands: {"method", "weighting", "bands",
"split", "dense_ppl", "ppl_by_rank": {"8": ...}, "params_by_rank", "step", "checkpoint",
"head", "replaced"} (and "band_ranks_by_rank" with bands) plus, after fine-tuning,
"finetune_steps", "finetuned_ppl_by_rank" and "dense_finetuned_ppl" (rewritten by each
call); TensorBoard scalars <method>/<split>_ppl (and <method>_finetuned/<split>_ppl) with
step = rank in the dense run's workdir; and, when the workdir is a sweep point, the sweep's
reports are rewritten to include the rows (kind <method>, beside posthoc_svd).
"""

from __future__ import annotations

import logging
import math
import os

import jax
import numpy as np
from flax import nnx

from factorized import files, frequency
from factorized.config import build
from factorized.evaluation import saved as eval_run
from factorized.model import costs
from factorized.runtime import parallel
from factorized.spec import Spec
from factorized.train import optim, trainer
from factorized.train.metric_writer import MetricWriter

POSTHOC_METHOD = 'posthoc_svd'  # every post-hoc method's name starts so (method_name)
POSTHOC_FILE = '{method}_{split}.json'  # in the dense run's workdir, one per method and split

log = logging.getLogger(__name__)
WEIGHTINGS = ('uniform', 'frequency')


def method_name(weighting: str = 'uniform', bands: tuple[int, ...] | list[int] = ()) -> str:
  """posthoc_svd, with _freq for frequency weighting and _bands for banded ranks."""
  return (POSTHOC_METHOD + ('_freq' if weighting == 'frequency' else '')
          + ('_bands' if bands else ''))


def weighted_truncation(W_VxD: np.ndarray, weights_V: np.ndarray, rank: int) -> np.ndarray:
  """The rank-R matrix minimising sum_i w_i |W_i - What_i|^2: W V_R^T V_R, V_R the top R
  right singular vectors of diag(sqrt(w)) W (see the module docstring), float64."""
  W_VxD = np.asarray(W_VxD, np.float64)
  _, _, vt_KxD = np.linalg.svd(np.sqrt(np.asarray(weights_V, np.float64))[:, None] * W_VxD,
                               full_matrices=False)
  return (W_VxD @ vt_KxD[:rank].T) @ vt_KxD[:rank]


def weighted_error(W_VxD: np.ndarray, approx_VxD: np.ndarray, weights_V: np.ndarray) -> float:
  """sum_i w_i |W_i - What_i|^2."""
  return float(np.sum(np.asarray(weights_V, np.float64)[:, None] * (W_VxD - approx_VxD) ** 2))


def band_rows(order_V: np.ndarray, bands: tuple[int, ...]) -> list[np.ndarray]:
  """The ids of each frequency band: order_V (most frequent first) cut at `bands`."""
  return np.split(order_V, list(bands))


def band_ranks(W_VxD: np.ndarray, weights_V: np.ndarray, rows: list[np.ndarray],
               budget: int) -> list[int]:
  """Each band's rank within `budget` parameters (R_b (V_b + D) in all), greedily by the
  weighted error each unit of rank removes per parameter (see the module docstring)."""
  W_VxD = np.asarray(W_VxD, np.float64)
  dim = W_VxD.shape[1]
  weights_V = np.sqrt(np.asarray(weights_V, np.float64))
  energy = [np.linalg.svd(weights_V[ids, None] * W_VxD[ids], compute_uv=False) ** 2
            for ids in rows]
  unit = [len(ids) + dim for ids in rows]
  ranks, spent = [1] * len(rows), sum(unit)
  if spent > budget:
    raise ValueError(f'{budget:,} parameters cannot give each of the {len(rows)} bands rank 1 '
                     f'({spent:,} needed): use a larger --svd_ranks or fewer --svd_bands.')
  while True:
    gains = [(energy[b][ranks[b]] / unit[b], b) for b in range(len(rows))
             if ranks[b] < min(len(rows[b]), dim) and spent + unit[b] <= budget]
    if not gains:
      return ranks
    _, best = max(gains)
    ranks[best] += 1
    spent += unit[best]


def compression(config: Spec, W_VxD: np.ndarray, rank: int, *,
                weights_V: np.ndarray | None, order_V: np.ndarray, bands: tuple[int, ...]
                ) -> tuple[Spec, np.ndarray, list[int] | None]:
  """The compressed model's config, the dense table to initialise it from (its kind
  truncates it exactly) and, with bands, their ranks: plain SVD, weighted, or banded."""
  svd = svd_config(config, rank)
  if not bands:
    return svd, W_VxD if weights_V is None else weighted_truncation(W_VxD, weights_V, rank), None
  weights_V = np.ones(len(W_VxD)) if weights_V is None else weights_V
  rows = band_rows(order_V, bands)
  budget = costs.param_counts(build.model_args(svd, len(W_VxD)))['embedding']
  ranks = band_ranks(W_VxD, weights_V, rows, budget)
  table_VxD = np.empty(np.shape(W_VxD))
  for ids, band_rank in zip(rows, ranks, strict=True):
    table_VxD[ids] = weighted_truncation(np.asarray(W_VxD)[ids], weights_V[ids], band_rank)
  banded = config.replace(**{'model.embed.kind': 'adaptive', 'model.embed.rank': int(rank),
                             'model.embed.band_cutoffs': tuple(bands),
                             'model.embed.band_widths': tuple(ranks)})
  return banded, table_VxD, ranks


def parse_bands(values: list[str], vocab_size: int) -> tuple[int, ...]:
  """The frequency ranks of --svd_bands=1000,5000, checked against V."""
  try:
    bands = tuple(int(value) for value in values)
  except ValueError:
    bands = ()
  if not bands or any(b <= a for a, b in zip((0, *bands), (*bands, vocab_size), strict=True)):
    raise ValueError(f'--svd_bands={",".join(values)}: expected increasing frequency ranks in '
                     f'[1, vocab_size - 1]=[1, {vocab_size - 1}], e.g. 1000,5000.')
  return bands


def svd_config(config: Spec, rank: int) -> Spec:
  """The dense run's config with an `svd` embedding of rank `rank` (no orthogonality penalty)."""
  return config.replace(**{'model.embed.kind': 'svd', 'model.embed.rank': int(rank),
                           'model.embed.ortho_penalty': 0.0})


def finetune_config(config: Spec, steps: int) -> Spec:
  """`config` with the fine-tuning schedule: the run's final lr as peak, N // 10 warm-up
  steps, N steps."""
  config = config.replace(**{'train.lr': config.train.lr * config.train.min_lr_ratio,
                             'train.num_steps': int(steps),
                             'train.warmup_steps': int(steps) // 10})
  build.TrainArgs.from_section(config.train)  # validates the schedule
  return config


def run_from_dense(dense: trainer.Run, config: Spec,
                   table_VxD: np.ndarray | None = None) -> trainer.Run:
  """The Run of `config` (the dense run's sizes; kind dense, svd or adaptive) initialised from
  `dense`: its table (or `table_VxD`: copied, or truncated as the kind does) and its other
  parameters; fresh optimizer."""
  if dense.args.model.embed.name != 'dense':
    raise ValueError(f'Post-hoc SVD needs a dense run; this one has model.embed.kind='
                     f'{dense.args.model.embed.name!r}.')
  # Host copies: the new state owns its buffers (train steps donate them).
  dense_params = jax.device_get(nnx.to_pure_dict(dense.state.params))
  if table_VxD is not None:
    dense_params['embed'] = {'W_VxD': table_VxD}
  args = build.build_args(config, dense.corpus.vocab_size)
  optimizer = optim.make_optimizer(args.train, args.model)
  parts, state = trainer.init_state(args, dense.mesh, dense_params=dense_params,
                                    token_counts=dense.token_counts, optimizer=optimizer)
  return trainer.Run(config, args, dense.corpus, dense.mesh, parts, state, dense.token_counts,
                     optimizer)


def finetune(run: trainer.Run, *, data_step: int, rows_per_step: int) -> trainer.TrainState:
  """`run.args.train.num_steps` train steps on `run` from the data position after
  `data_step` steps of `rows_per_step` rows; returns the final state (run.state is donated)."""
  batches = run.train_batches()
  rows = data_step * rows_per_step
  batches.set_state({'epoch': rows // batches.rows_per_epoch,
                     'index': rows % batches.rows_per_epoch})
  train_step = run.train_step()
  state, metrics = run.state, None
  for _ in range(run.args.train.num_steps):
    state, metrics = train_step(state, parallel.global_batch(next(batches), run.mesh))
  loss = float(jax.device_get(metrics['loss']))
  if not math.isfinite(loss):
    raise trainer.NonFiniteLoss(f'fine-tuning loss {loss} is not finite: use fewer '
                                '--svd_finetune_steps or a run with a lower train.lr.')
  return state


def _budget(run: trainer.Run) -> dict[str, int]:
  counts = costs.param_counts(run.args.model)
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
                checkpoint: str = 'best', finetune_steps: int = 0, weighting: str = 'uniform',
                bands: list[str] | tuple[int, ...] = (),
                mesh: jax.sharding.Mesh | None = None) -> dict:
  """Perplexity on `split` of a dense run's embedding compressed to each rank (truncated SVD,
  frequency-weighted, per band: see the module docstring); writes
  workdir/<method>_<split>.json and TensorBoard scalars."""
  if split not in ('valid', 'test'):
    raise ValueError(f'--split={split!r}: expected valid or test.')
  if finetune_steps < 0:
    raise ValueError(f'--svd_finetune_steps={finetune_steps} must be >= 0.')
  if weighting not in WEIGHTINGS:
    raise ValueError(f'--svd_weighting={weighting!r}: expected {" or ".join(WEIGHTINGS)}.')
  saved = build.load_saved(workdir)
  if saved.model.embed.kind != 'dense':
    raise ValueError(f'--svd_ranks compresses a dense run; {workdir} has model.embed.kind='
                     f'{saved.model.embed.kind!r} (train one with configs/brown.py:kind=dense).')
  dense, step = eval_run.restore_run(workdir, checkpoint, mesh=mesh, config=saved)
  vocab_size = dense.corpus.vocab_size
  ranks = _check_ranks([int(r) for r in ranks], min(vocab_size, dense.args.model.model_dim))
  bands = parse_bands([str(b) for b in bands], vocab_size) if bands else ()
  method = method_name(weighting, bands)
  table_VxD = np.asarray(jax.device_get(dense.state.params['embed']['W_VxD'][...]))
  weights_V = dense.token_counts if weighting == 'frequency' else None
  order_V = frequency.frequency_order(dense.token_counts)
  tuned = finetune_config(dense.config, finetune_steps) if finetune_steps else None
  rows_per_step = dense.args.train.batch_size
  head = 'tied' if dense.args.model.embed.tied else 'untied'
  result = {
      'method': method, 'weighting': weighting, 'bands': list(bands),
      'split': split, 'step': step, 'checkpoint': checkpoint, 'head': head,
      'replaced': ('input embedding and tied output head' if head == 'tied'
                   else 'input embedding only (the untied output head is kept)'),
      'dense_ppl': dense.evaluator(split)(dense.state.params)['ppl'],
      'dense_params': _budget(dense),
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
    config, compressed_VxD, ranks_b = compression(tuned or dense.config, table_VxD, rank,
                                                  weights_V=weights_V, order_V=order_V,
                                                  bands=bands)
    run = run_from_dense(dense, config, None if compressed_VxD is table_VxD else compressed_VxD)
    result['params_by_rank'][str(rank)] = _budget(run)
    if bands:
      result.setdefault('band_ranks_by_rank', {})[str(rank)] = ranks_b
    evaluator = run.evaluator(split)
    result['ppl_by_rank'][str(rank)] = evaluator(run.state.params)['ppl']
    message = f'rank {rank}: {split} ppl {result["ppl_by_rank"][str(rank)]:.3f}'
    if finetune_steps:
      state = finetune(run, data_step=step, rows_per_step=rows_per_step)
      result['finetuned_ppl_by_rank'][str(rank)] = evaluator(state.params)['ppl']
      message += (f', after {finetune_steps} fine-tuning steps '
                  f'{result["finetuned_ppl_by_rank"][str(rank)]:.3f}')
    log.info('%s of %s, %s (dense %.3f).', method, workdir, message, result['dense_ppl'])
  if jax.process_index() == 0:
    files.write_json_atomic(
        os.path.join(workdir, POSTHOC_FILE.format(method=method, split=split)),
        result)
    writer = MetricWriter(workdir)
    try:
      for rank in ranks:
        values = {f'{method}/{split}_ppl': result['ppl_by_rank'][str(rank)]}
        if finetune_steps:
          values[f'{method}_finetuned/{split}_ppl'] = result['finetuned_ppl_by_rank'][str(rank)]
        writer.scalars(rank, values)
    finally:
      writer.close()
  return result
