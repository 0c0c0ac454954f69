"""The training loop: data -> pure data-parallel step -> evaluation, checkpoints, events.

`train_and_evaluate(config, workdir)` runs or resumes a run and returns its summary.
Inside the step loop the host reads nothing from the device except at log, eval and
checkpoint steps, and there the metrics read are those of the step before (already
finished). It keeps at most two steps in flight: after dispatching a step it waits for
the previous one to finish (a wait, not a transfer), so the progress bar counts finished
steps and a stop signal checkpoints within about two steps' time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx
from jax.sharding import Mesh

from factorized import embeddings
from factorized import metrics as metrics_lib
from factorized.data import pipeline as data_lib
from factorized.embeddings import spectrum
from factorized.model import costs
from factorized.model import transformer as model_lib
from factorized.runtime import compile_cache, parallel
from factorized.spec import Spec
from factorized.train import checkpointing, optim
from factorized.train import progress as progress_lib
from factorized.train import summary as summary_lib
from factorized.train import workdir as workdir_lib
from factorized.train.evaluate import Evaluator
from factorized.train.metric_writer import HPARAM_METRICS, MetricWriter
from factorized.train.step import ModelParts, TrainState, make_train_step
from factorized.train.stopping import StopRequest

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
  """Raised after a stop signal (`StopRequest`) once a checkpoint of the step is written."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.signal_name = signal_name


class NonFiniteLoss(FloatingPointError):
  """Raised when the train loss or gradient norm becomes NaN or Inf."""


@dataclasses.dataclass
class Run:
  """What a run is built from, shared by training, eval.py and post-hoc compression."""

  config: Spec
  corpus: data_lib.Corpus
  mesh: Mesh
  parts: ModelParts
  state: TrainState
  token_counts: np.ndarray  # the train split's count of every token id (train_counts.npy)
  optimizer: optax.GradientTransformation  # the one the state's opt_state was made by

  def evaluator(self, split: str, *, stride: int | None = None) -> Evaluator:
    """The exact evaluator of `split` ('valid' or 'test'), windows every `stride` tokens
    (default data.seq_len), with every metric per frequency band (eval.band_edges) and per
    frequency class (eval.count_edges), and on the frequent types' tokens together
    (eval.frequent_count)."""
    groups = {'bands': data_lib.frequency_bands(self.token_counts, self.config.eval.band_edges),
              'classes': data_lib.frequency_classes(self.token_counts,
                                                    self.config.eval.count_edges)}
    return Evaluator(
        self.parts, self.mesh, self.corpus.splits[split],
        seq_len=self.config.data.seq_len,
        batch_size=self.config.train.eval_batch_size,
        num_words=self.corpus.words[split] if self.config.data.tokenizer == 'bpe' else None,
        groups=groups, pooled={'frequent': ('classes', data_lib.frequent_classes(
            self.config.eval.count_edges, self.config.eval.frequent_count))},
        stride=stride)

  def model(self, params: nnx.State | None = None) -> nnx.Module:
    """The NNX model holding `params` (default: the current state's)."""
    return self.parts.merge(self.state.params if params is None else params)

  def train_batches(self) -> data_lib.TrainBatches:
    """This process's train batches of the config (from the start: set_state moves them)."""
    return data_lib.TrainBatches(
        self.corpus.splits['train'], seq_len=self.config.data.seq_len,
        global_batch_size=self.config.train.batch_size, seed=self.config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())

  def train_step(self):
    """The jitted train step of the config: `(state, batch) -> (state, metrics)`."""
    train_config = self.config.train
    return make_train_step(
        self.parts, self.optimizer, optim.learning_rate_schedule(train_config),
        self.mesh, grad_accum_steps=train_config.grad_accum_steps)


def _require_spec(config) -> None:
  """A TypeError unless `config` is a Spec: a run is built from a validated, migrated
  config only (factorized/config/specs.py)."""
  if not isinstance(config, Spec):
    raise TypeError(f'a run takes a Spec, not a {type(config).__name__}: pass '
                    'factorized.config.specs.from_config(config).')


def build_run(
    config: Spec, workdir: str, *, mesh: Mesh | None = None
) -> Run:
  """Prepares the corpus and creates a fresh replicated state. `config` is validated
  (factorized/config/specs.py) but for what needs the vocabulary size, checked here before
  the model is built or anything is compiled.
  """
  _require_spec(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.train.batch_size, mesh,
                            micro_batches=config.train.grad_accum_steps)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, field='train.eval_batch_size')
  corpus = parallel.primary_first(
      lambda: data_lib.prepare_corpus(config.data, run_dir=workdir), 'prepare_corpus')
  model_lib.model_args(config, corpus.vocab_size)  # validates config.model
  token_counts = data_lib.load_train_counts(workdir)
  optimizer = optim.make_optimizer(config)
  parts, state = init_state(config, corpus.vocab_size, mesh, token_counts=token_counts,
                            optimizer=optimizer)
  return Run(config, corpus, mesh, parts, state, token_counts, optimizer)


def init_state(config: Spec, vocab_size: int, mesh: Mesh, *,
               dense_params: dict | None = None, token_counts: np.ndarray | None = None,
               optimizer: optax.GradientTransformation | None = None
               ) -> tuple[ModelParts, TrainState]:
  """A freshly initialised model (its static parts) and train state, replicated on `mesh`.

  Parameters are created inside jit with replicated output shardings, so every process
  of a multi-host run holds the same global arrays without a host round trip. Given
  `dense_params` (the pure-dict parameters of a trained dense model of the same sizes),
  the embedding starts from its table (`dense_table=`: a copy for dense, the split
  truncated SVD for svd, per band for adaptive) and every other parameter is a copy; the
  optimizer starts afresh. `token_counts`: the train split's counts, for kinds that need
  the frequency order (adaptive).
  """
  dense_table = None if dense_params is None else dense_params['embed']['W_VxD']

  def create():
    model = model_lib.build_model(config, vocab_size, rngs=nnx.Rngs(params=config.seed),
                                  dense_table=dense_table, token_counts=token_counts)
    graphdef, params, consts = nnx.split(model, nnx.Param, ...)
    if dense_params is not None:
      pure = nnx.to_pure_dict(params)
      if set(pure) != set(dense_params):
        raise ValueError(f'model parameters {sorted(pure)} do not match the dense model '
                         f'{sorted(dense_params)}.')
      pure.update({name: value for name, value in dense_params.items() if name != 'embed'})
      nnx.replace_by_pure_dict(params, pure)
    return graphdef, params, consts

  graphdef, _, _ = nnx.eval_shape(create)
  replicated = parallel.replicated(mesh)
  params, consts = jax.jit(lambda: create()[1:], out_shardings=replicated)()
  optimizer = optim.make_optimizer(config) if optimizer is None else optimizer
  state = jax.jit(
      lambda p: TrainState(
          step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p),
          rng=jax.random.key_data(jax.random.key(config.seed))),
      out_shardings=replicated)(params)
  return ModelParts(graphdef, consts), state


def embedding_spectrum(model: nnx.Module) -> dict[str, float]:
  """Stable rank and entropy effective rank of the input embedding, from its factors."""
  singular_values = np.asarray(spectrum.singular_values(model.embed.factors()))
  return {
      'spectrum/stable_rank': float(spectrum.stable_rank(singular_values)),
      'spectrum/entropy_effective_rank': float(spectrum.entropy_effective_rank(singular_values)),
  }


GROUPINGS = {'bands': 'band', 'classes': 'class'}  # an Evaluator's groupings: tag word


def group_scalars(split: str, result: dict) -> dict[str, float]:
  """TensorBoard scalars <split>_band_<metric>/<band> and <split>_class_<metric>/<class> of
  an Evaluator result, for every reported metric but the loss (ppl, accuracy, ...; groups
  with tokens; `<unk>` is tagged `unk`, TensorBoard's tags allowing no angle brackets)."""
  return {f'{split}_{word}_{key}/{name.strip("<>")}': group[key]
          for grouping, word in GROUPINGS.items()
          for key in metrics_lib.reported_names() if key != 'loss'
          for name, group in result[grouping].items() if group.get(key) is not None}


def metric_scalars(split: str, result: dict) -> dict[str, float]:
  """TensorBoard scalars <split>/<metric> of the metrics beyond loss and ppl (accuracy, ...)."""
  return {f'{split}/{key}': result[key] for key in extra_metrics(result)}


def extra_metrics(result: dict) -> dict[str, float]:
  """An Evaluator result's numbers of the metrics beyond loss and ppl, by name."""
  return {key: result[key] for key in metrics_lib.reported_names()
          if key not in ('loss', 'ppl') and result.get(key) is not None}


class _Throughput:
  """Tokens per second between host syncs (metric reads, evaluations, checkpoints).

  The first interval holds the compilation and is left out of the steady-state figure;
  pauses (evaluation, checkpointing) are left out of every figure.
  """

  def __init__(self, start_step: int, tokens_per_step: int):
    self._start = self._mark = time.perf_counter()
    self._step, self._tokens_per_step = start_step, tokens_per_step
    self._tokens, self._seconds, self._first = 0, 0.0, True
    self._last_rate = math.nan

  def interval(self, step: int) -> float:
    """Closes the interval ending after `step` (whose result the host has just read)."""
    if step == self._step:  # already closed at a checkpoint: report that interval's rate
      return self._last_rate
    now = time.perf_counter()
    tokens = (step - self._step) * self._tokens_per_step
    seconds, self._mark, self._step = now - self._mark, now, step
    if not self._first:
      self._tokens, self._seconds = self._tokens + tokens, self._seconds + seconds
    self._first = False
    self._last_rate = tokens / max(seconds, 1e-9)
    return self._last_rate

  def pause(self, seconds: float) -> None:
    self._mark += seconds

  def wall_time(self) -> float:
    return time.perf_counter() - self._start

  def steady_tokens_per_s(self) -> float | None:
    return self._tokens / self._seconds if self._seconds else None


def _check_finite(step: int, metrics: dict, checkpointer: checkpointing.Checkpointer) -> None:
  if not (math.isfinite(metrics['loss']) and math.isfinite(metrics['grad_norm'])):
    good = checkpointer.latest_step()
    raise NonFiniteLoss(
        f'train loss {metrics["loss"]} / grad norm {metrics["grad_norm"]} at step {step} is '
        f'not finite. The last good checkpoint (step {good}) is kept in '
        f'{checkpointer.directory}; lower train.lr or raise train.warmup_steps, then resume '
        'with --config.overwrite=True (or another workdir).')


def train_and_evaluate(
    config: Spec, workdir: str, *, mesh: Mesh | None = None, stop: StopRequest | None = None
) -> dict:
  """Trains (or resumes) the run in `workdir` to `train.num_steps`; returns its summary.

  `stop`: a StopRequest the caller entered before this (a sweep point's job does, as it
  starts); by default one is entered here, before anything is set up. However it ends
  (finished, interrupted, non-finite loss), pending checkpoint writes complete and the event
  file is closed before this returns or raises.
  """
  _require_spec(config)
  with contextlib.nullcontext(stop) if stop is not None else StopRequest() as stop:
    compile_cache.enable(config.data)  # before anything compiles: a restart reuses the steps
    resuming = parallel.primary_first(
        lambda: workdir_lib.prepare_workdir(workdir, config), 'prepare_workdir')
    run = build_run(config, workdir, mesh=mesh)
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
    writer = MetricWriter(workdir)
    try:
      return _fit(run, workdir, checkpointer, writer, resuming, stop)
    finally:
      checkpointer.close()  # waits for asynchronous saves
      writer.close()


def _fit(run: Run, workdir: str, checkpointer: checkpointing.Checkpointer,
         writer: MetricWriter, resuming: bool, stop: StopRequest) -> dict:
  config = run.config
  train_cfg, vocab_size = config.train, run.corpus.vocab_size
  batches = run.train_batches()
  progress = {'elapsed_s': 0.0, 'best_valid_ppl': math.inf, 'valid_ppl': math.nan}
  state = run.state
  if resuming and checkpointer.latest_step() is not None:
    state, extra = checkpointer.restore(state)
    batches.set_state(extra['data'])
    progress.update(extra['progress'])
    log.warning('Resumed %s at step %d.', workdir, int(state.step))

  valid_eval, test_eval = run.evaluator('valid'), run.evaluator('test')
  params_count = costs.param_counts(config, vocab_size)
  embed = config.model.embed
  own_head = embed.head == 'untied' and embed.head_kind != 'dense'
  writer.hparams({'kind': embed.kind, 'rank': embed.rank if embeddings.ranked(embed.kind) else 0,
                  'head': embed.head, 'head_kind': embed.head_kind if own_head else '',
                  'head_rank': (embed.head_rank or embed.rank) if own_head else 0,
                  'embedding_params': params_count['embedding'],
                  'vocab_params': params_count['vocab'], 'total_params': params_count['total'],
                  'model_dim': config.model.model_dim, 'embed_decay': train_cfg.embed_decay,
                  'seed': config.seed})
  writer.text('params', '| parameters | count |\n|---|---:|\n' + ''.join(
      f'| {name} | {value:,} |\n' for name, value in params_count.items()))

  train_step = run.train_step()
  tokens_per_step = train_cfg.batch_size * config.data.seq_len
  start_step = int(state.step)
  last_metrics = {'loss': progress.get('train_loss', math.nan)}  # a run resumed at its end
  throughput = _Throughput(start_step, tokens_per_step)
  elapsed_before = progress['elapsed_s']

  def evaluate(step: int, params: nnx.State) -> dict:
    result = valid_eval(params)
    progress['valid_ppl'] = result['ppl']
    progress['best_valid_ppl'] = min(progress['best_valid_ppl'], result['ppl'])
    writer.scalars(step, {'valid/loss': result['loss'], 'valid/ppl': result['ppl'],
                          HPARAM_METRICS[0]: result['ppl'],
                          HPARAM_METRICS[2]: result['frequent']['ppl'],
                          **metric_scalars('valid', result),
                          **group_scalars('valid', result),
                          **embedding_spectrum(run.model(params))})
    progress['valid_bands'] = result['bands']
    progress['valid_classes'] = result['classes']
    progress['valid_frequent'] = result['frequent']
    progress['valid_metrics'] = extra_metrics(result)
    return result

  def read(metrics) -> dict:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}

  bar = tqdm.tqdm(total=train_cfg.num_steps, initial=start_step, unit='step', dynamic_ncols=True,
                  disable=jax.process_index() != 0)
  pending = None  # (step, device metrics) of the step dispatched before this one
  with bar:
    for step in range(start_step + 1, train_cfg.num_steps + 1):
      batch = parallel.global_batch(next(batches), run.mesh)
      state, metrics = train_step(state, batch)
      if pending is not None:
        # At most two steps in flight: this one queued behind the previous, which the host
        # waits for (no transfer) before preparing the next batch. The bar counts finished
        # steps, and a stop request is served within about two steps' time.
        jax.block_until_ready(pending[1])
        bar.update(max(0, pending[0] - bar.n))
      if pending is not None and pending[0] % train_cfg.log_every == 0:
        last_metrics = read(pending[1])
        _check_finite(pending[0], last_metrics, checkpointer)
        tokens_per_s = throughput.interval(pending[0])
        writer.scalars(pending[0], {
            'train/loss': last_metrics['loss'],
            'train/ppl': math.exp(min(last_metrics['loss'], 50.0)),
            'train/lr': last_metrics['lr'],
            'train/grad_norm': last_metrics['grad_norm'],
            'train/penalty': last_metrics['penalty'],
            'train/tokens_per_s': tokens_per_s})
        bar.set_postfix(loss=f'{last_metrics["loss"]:.3f}', tok_s=f'{tokens_per_s:,.0f}')
        if jax.process_index() == 0:  # for a sweep's live view (factorized/train/progress.py)
          progress_lib.write_progress(
              workdir, step=pending[0], num_steps=train_cfg.num_steps,
              loss=last_metrics['loss'], steps_per_s=tokens_per_s / tokens_per_step,
              tokens_per_s=tokens_per_s)
      pending = (step, metrics)
      final = step == train_cfg.num_steps
      do_eval = final or step % train_cfg.eval_every == 0
      if final or do_eval or step % train_cfg.ckpt_every == 0 or stop.signal_name:
        last_metrics = read(metrics)
        bar.update(step - bar.n)  # this step has finished too
        throughput.interval(step)
        paused_at = time.perf_counter()
        _check_finite(step, last_metrics, checkpointer)
        valid = evaluate(step, state.params) if do_eval else None
        progress['elapsed_s'] = elapsed_before + throughput.wall_time()
        progress['train_loss'] = last_metrics['loss']
        checkpointer.save(step, state, {'data': batches.get_state(), 'progress': progress},
                          valid_ppl=valid['ppl'] if valid else None)
        writer.flush()
        throughput.pause(time.perf_counter() - paused_at)  # evaluation is not training time
      if stop.signal_name and not final:
        raise TrainingInterrupted(
            f'{stop.signal_name} at step {step}: checkpoint written to '
            f'{checkpointer.directory}; run the same command again to resume.',
            stop.signal_name)

  def stop_now(signal_name: str):
    raise TrainingInterrupted(
        f'{signal_name} during the final evaluation: the checkpoint of step {int(state.step)} '
        f'is in {checkpointer.directory}; run the same command again to finish.', signal_name)

  # The last checkpoint is written: nothing is left to save, so a stop ends it at once.
  with stop.acting(stop_now):
    checkpointer.wait()
    best_step = checkpointer.best_step()
    best_params = state.params
    if best_step is not None and best_step != int(state.step):
      best_params = checkpointer.restore(state, step=best_step)[0].params
    test = test_eval(best_params)
    writer.scalars(int(state.step), {'test/loss': test['loss'], 'test/ppl': test['ppl'],
                                     HPARAM_METRICS[1]: test['ppl'],
                                     HPARAM_METRICS[3]: test['frequent']['ppl'],
                                     **metric_scalars('test', test),
                                     **group_scalars('test', test)})
    writer.end_session()
    summary = summary_lib.build_summary(
        config, vocab_size,
        valid_ppl=progress['valid_ppl'], best_valid_ppl=progress['best_valid_ppl'],
        best_step=best_step, test_ppl=test['ppl'], test_word_ppl=test.get('word_ppl'),
        valid_bands=progress.get('valid_bands'), test_bands=test['bands'],
        valid_classes=progress.get('valid_classes'), test_classes=test['classes'],
        valid_frequent=progress.get('valid_frequent'), test_frequent=test['frequent'],
        train_loss=last_metrics['loss'], steps=int(state.step),
        tokens_seen=int(state.step) * tokens_per_step, wall_time_s=progress['elapsed_s'],
        tokens_per_s=throughput.steady_tokens_per_s(),
        **{f'valid_{key}': value for key, value in progress.get('valid_metrics', {}).items()},
        **{f'test_{key}': value for key, value in extra_metrics(test).items()})
    summary_lib.write_summary(workdir, summary)
  return summary
