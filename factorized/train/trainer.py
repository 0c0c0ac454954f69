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

from factorized import metrics as metrics_lib
from factorized.config.build import RunArgs, build_args
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
  """What a run is built from, shared by training, eval.py and post-hoc compression: its
  Spec (saved as config.json and in summary.json) and the typed arguments built from it
  once (`args`), which everything below reads."""

  config: Spec
  args: RunArgs
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
    args = self.args
    groups = {'bands': data_lib.frequency_bands(self.token_counts, args.eval.band_edges),
              'classes': data_lib.frequency_classes(self.token_counts, args.eval.count_edges)}
    return Evaluator(
        self.parts, self.mesh, self.corpus.splits[split],
        seq_len=args.data.seq_len,
        batch_size=args.train.eval_batch_size,
        num_words=self.corpus.words[split] if args.data.tokenizer == 'bpe' else None,
        groups=groups, pooled={'frequent': ('classes', args.eval.frequent_classes())},
        stride=stride)

  def model(self, params: nnx.State | None = None) -> nnx.Module:
    """The NNX model holding `params` (default: the current state's)."""
    return self.parts.merge(self.state.params if params is None else params)

  def train_batches(self) -> data_lib.TrainBatches:
    """This process's train batches of the run (from the start: set_state moves them)."""
    return data_lib.TrainBatches(
        self.corpus.splits['train'], seq_len=self.args.data.seq_len,
        global_batch_size=self.args.train.batch_size, seed=self.args.seed,
        process_index=jax.process_index(), process_count=jax.process_count())

  def train_step(self):
    """The jitted train step of the run: `(state, batch) -> (state, metrics)`."""
    train = self.args.train
    return make_train_step(
        self.parts, self.optimizer, optim.learning_rate_schedule(train),
        self.mesh, grad_accum_steps=train.grad_accum_steps)


def _require_spec(config) -> None:
  """A TypeError unless `config` is a Spec: a run is built from a validated, migrated
  config only (factorized/config/build.py)."""
  if not isinstance(config, Spec):
    raise TypeError(f'a run takes a Spec, not a {type(config).__name__}: pass '
                    'factorized.config.build.from_config(config).')


def build_run(
    config: Spec, workdir: str, *, mesh: Mesh | None = None
) -> Run:
  """Prepares the corpus and creates a fresh replicated state. `config` is validated
  (factorized/config/build.py) but for what needs the vocabulary size: the run's arguments
  are built here, once (factorized/config/build.py), before the model is built or anything
  is compiled.
  """
  _require_spec(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.train.batch_size, mesh,
                            micro_batches=config.train.grad_accum_steps)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, field='train.eval_batch_size')
  corpus = parallel.primary_first(
      lambda: data_lib.prepare_corpus(config.data, run_dir=workdir), 'prepare_corpus')
  args = build_args(config, corpus.vocab_size)
  token_counts = data_lib.load_train_counts(workdir)
  optimizer = optim.make_optimizer(args.train, args.model)
  parts, state = init_state(args, mesh, token_counts=token_counts, optimizer=optimizer)
  return Run(config, args, corpus, mesh, parts, state, token_counts, optimizer)


def init_state(args: RunArgs, mesh: Mesh, *,
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
    model = model_lib.TransformerLM(args.model, rngs=nnx.Rngs(params=args.seed),
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
  if optimizer is None:
    optimizer = optim.make_optimizer(args.train, args.model)
  state = jax.jit(
      lambda p: TrainState(
          step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p),
          rng=jax.random.key_data(jax.random.key(args.seed))),
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
  with tokens). TensorBoard's tags allow neither angle brackets nor '+': `<unk>` is tagged
  `unk` and `101+` `101plus`."""
  return {f'{split}_{word}_{key}/{name.strip("<>").replace("+", "plus")}': group[key]
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
    checkpointer = checkpointing.Checkpointer(workdir, keep=run.args.train.keep_checkpoints)
    writer = MetricWriter(workdir)
    try:
      return _fit(run, workdir, checkpointer, writer, resuming, stop)
    finally:
      checkpointer.close()  # waits for asynchronous saves
      writer.close()


def _fit(run: Run, workdir: str, checkpointer: checkpointing.Checkpointer,
         writer: MetricWriter, resuming: bool, stop: StopRequest) -> dict:
  """The step loop. Each step is dispatched, then the one before it is waited for (and
  logged at a log step); at eval and checkpoint steps, and on a stop, this step is read,
  evaluated and saved. The handlers are `_Loop`'s."""
  batches = run.train_batches()
  state, progress = run.state, {}
  if resuming:
    state, progress = _restore(state, checkpointer, batches, workdir)
  train_step = run.train_step()
  loop = _Loop(run, workdir, checkpointer, writer, batches, progress, int(state.step))
  num_steps = run.args.train.num_steps
  pending = None  # (step, device metrics) of the step dispatched before this one
  with loop.bar:
    for step in range(int(state.step) + 1, num_steps + 1):
      state, metrics = train_step(state, parallel.global_batch(next(batches), run.mesh))
      if pending is not None:
        loop.finished(*pending)
      pending = (step, metrics)
      if loop.saves_at(step) or stop.signal_name:
        loop.checkpoint(step, state, metrics)
      if stop.signal_name and step != num_steps:
        loop.stop(step, stop.signal_name)
  return loop.finish(state, stop)


def _restore(state: TrainState, checkpointer: checkpointing.Checkpointer,
             batches: data_lib.TrainBatches, workdir: str) -> tuple[TrainState, dict]:
  """The latest checkpoint's state and progress, the batches moved to where it left them;
  `state` and no progress when there is none."""
  if checkpointer.latest_step() is None:
    return state, {}
  state, extra = checkpointer.restore(state)
  batches.set_state(extra['data'])
  log.warning('Resumed %s at step %d.', workdir, int(state.step))
  return state, extra['progress']


class _Loop:
  """The handlers of `_fit`'s step loop (log, evaluate, checkpoint, stop, finish) and the
  run's progress: the last and best validation perplexities, the last train loss and the
  training time, saved with every checkpoint so that a resumed run carries them on."""

  def __init__(self, run: Run, workdir: str, checkpointer: checkpointing.Checkpointer,
               writer: MetricWriter, batches: data_lib.TrainBatches, progress: dict,
               start_step: int):
    self.run, self.workdir, self.checkpointer, self.writer = run, workdir, checkpointer, writer
    self.train, self.batches = run.args.train, batches
    self.progress = {'elapsed_s': 0.0, 'best_valid_ppl': math.inf, 'valid_ppl': math.nan,
                     **progress}
    self.valid_eval, self.test_eval = run.evaluator('valid'), run.evaluator('test')
    _describe(writer, run.args)
    self.tokens_per_step = self.train.batch_size * run.args.data.seq_len
    self.last_metrics = {'loss': self.progress.get('train_loss', math.nan)}  # resumed at its end
    self.throughput = _Throughput(start_step, self.tokens_per_step)
    self.elapsed_before = self.progress['elapsed_s']
    self.bar = tqdm.tqdm(total=self.train.num_steps, initial=start_step, unit='step',
                         dynamic_ncols=True, disable=jax.process_index() != 0)

  def finished(self, step: int, metrics: dict) -> None:
    """Waits for `step` (dispatched before the current one) and logs it at a log step.

    At most two steps in flight: the current one queued behind `step`, which the host waits
    for (no transfer) before preparing the next batch. The bar counts finished steps, and a
    stop request is served within about two steps' time."""
    jax.block_until_ready(metrics)
    self.bar.update(max(0, step - self.bar.n))
    if step % self.train.log_every == 0:
      self.log(step, metrics)

  def log(self, step: int, metrics: dict) -> None:
    """Reads a finished step's metrics: train scalars, the bar, progress.json."""
    self.last_metrics = _read(metrics)
    _check_finite(step, self.last_metrics, self.checkpointer)
    tokens_per_s = self.throughput.interval(step)
    loss = self.last_metrics['loss']
    self.writer.scalars(step, {
        'train/loss': loss, 'train/ppl': math.exp(min(loss, 50.0)),
        'train/lr': self.last_metrics['lr'], 'train/grad_norm': self.last_metrics['grad_norm'],
        'train/penalty': self.last_metrics['penalty'], 'train/tokens_per_s': tokens_per_s})
    self.bar.set_postfix(loss=f'{loss:.3f}', tok_s=f'{tokens_per_s:,.0f}')
    if jax.process_index() == 0:  # for a sweep's live view (factorized/train/progress.py)
      progress_lib.write_progress(
          self.workdir, step=step, num_steps=self.train.num_steps, loss=loss,
          steps_per_s=tokens_per_s / self.tokens_per_step, tokens_per_s=tokens_per_s)

  def evaluates_at(self, step: int) -> bool:
    return step == self.train.num_steps or step % self.train.eval_every == 0

  def saves_at(self, step: int) -> bool:
    return self.evaluates_at(step) or step % self.train.ckpt_every == 0

  def checkpoint(self, step: int, state: TrainState, metrics: dict) -> None:
    """Reads `step`'s metrics, evaluates at an eval step and saves the checkpoint; the
    pause is left out of the throughput."""
    self.last_metrics = _read(metrics)
    self.bar.update(step - self.bar.n)  # this step has finished too
    self.throughput.interval(step)
    paused_at = time.perf_counter()
    _check_finite(step, self.last_metrics, self.checkpointer)
    valid = self.evaluate(step, state.params) if self.evaluates_at(step) else None
    self.progress['elapsed_s'] = self.elapsed_before + self.throughput.wall_time()
    self.progress['train_loss'] = self.last_metrics['loss']
    self.checkpointer.save(step, state, {'data': self.batches.get_state(),
                                         'progress': self.progress},
                           valid_ppl=valid['ppl'] if valid else None)
    self.writer.flush()
    self.throughput.pause(time.perf_counter() - paused_at)

  def evaluate(self, step: int, params: nnx.State) -> dict:
    """The valid split: its scalars and the embedding's spectrum, and the progress."""
    result = self.valid_eval(params)
    self.progress['valid_ppl'] = result['ppl']
    self.progress['best_valid_ppl'] = min(self.progress['best_valid_ppl'], result['ppl'])
    self.writer.scalars(step, {**_eval_scalars('valid', result),
                               **embedding_spectrum(self.run.model(params))})
    self.progress['valid_bands'] = result['bands']
    self.progress['valid_classes'] = result['classes']
    self.progress['valid_frequent'] = result['frequent']
    self.progress['valid_metrics'] = extra_metrics(result)
    return result

  def stop(self, step: int, signal_name: str) -> None:
    """Ends the run after a stop signal, once `step`'s checkpoint is written."""
    raise TrainingInterrupted(
        f'{signal_name} at step {step}: checkpoint written to {self.checkpointer.directory}; '
        'run the same command again to resume.', signal_name)

  def finish(self, state: TrainState, stop: StopRequest) -> dict:
    """Evaluates the test split at the best valid step and writes summary.json. The last
    checkpoint is written: nothing is left to save, so a stop ends it at once."""
    def stop_now(signal_name: str):
      raise TrainingInterrupted(
          f'{signal_name} during the final evaluation: the checkpoint of step '
          f'{int(state.step)} is in {self.checkpointer.directory}; run the same command '
          'again to finish.', signal_name)

    with stop.acting(stop_now):
      self.checkpointer.wait()
      best_step = self.checkpointer.best_step()
      best_params = state.params
      if best_step is not None and best_step != int(state.step):
        best_params = self.checkpointer.restore(state, step=best_step)[0].params
      test = self.test_eval(best_params)
      self.writer.scalars(int(state.step), _eval_scalars('test', test))
      self.writer.end_session()
      summary = _summary(self.run, self.progress, test, best_step=best_step,
                         steps=int(state.step), train_loss=self.last_metrics['loss'],
                         tokens_per_s=self.throughput.steady_tokens_per_s())
      summary_lib.write_summary(self.workdir, summary)
    return summary


def _read(metrics: dict) -> dict[str, float]:
  """A finished step's metrics on the host (the step's one transfer)."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


# Each split's HParams metrics: its perplexity and its frequent types' perplexity.
_HPARAM_TAGS = {'valid': (HPARAM_METRICS[0], HPARAM_METRICS[2]),
                'test': (HPARAM_METRICS[1], HPARAM_METRICS[3])}


def _eval_scalars(split: str, result: dict) -> dict[str, float]:
  """TensorBoard scalars of an Evaluator result: loss, ppl, the HParams metrics, the other
  metrics and every band and class."""
  ppl_tag, frequent_tag = _HPARAM_TAGS[split]
  return {f'{split}/loss': result['loss'], f'{split}/ppl': result['ppl'],
          ppl_tag: result['ppl'], frequent_tag: result['frequent']['ppl'],
          **metric_scalars(split, result), **group_scalars(split, result)}


def _describe(writer: MetricWriter, args: RunArgs) -> None:
  """The run's HParams (its kind, ranks and sizes) and its parameter counts as a table."""
  model = args.model
  counts = costs.param_counts(model)
  rank = model.embed.rank if model.embed.rank_label else 0
  writer.hparams({'kind': model.embed.name, 'rank': rank,
                  'head': 'tied' if model.embed.tied else 'untied',
                  'head_kind': '' if model.head is None else model.head.name,
                  'head_rank': 0 if model.head is None else model.head.rank,
                  'embedding_params': counts['embedding'], 'vocab_params': counts['vocab'],
                  'total_params': counts['total'], 'model_dim': model.model_dim,
                  'embed_decay': args.train.embed_decay, 'seed': args.seed})
  writer.text('params', '| parameters | count |\n|---|---:|\n' + ''.join(
      f'| {name} | {value:,} |\n' for name, value in counts.items()))


def _summary(run: Run, progress: dict, test: dict, *, best_step: int | None, steps: int,
             train_loss: float, tokens_per_s: float | None) -> dict:
  """summary.json of a finished run: the last and best validation (from `progress`), the
  test split at the best step, per band, class and frequent types, and the costs."""
  args = run.args
  return summary_lib.build_summary(
      args, run.config.to_dict(),
      valid_ppl=progress['valid_ppl'], best_valid_ppl=progress['best_valid_ppl'],
      best_step=best_step, test_ppl=test['ppl'], test_word_ppl=test.get('word_ppl'),
      valid_bands=progress.get('valid_bands'), test_bands=test['bands'],
      valid_classes=progress.get('valid_classes'), test_classes=test['classes'],
      valid_frequent=progress.get('valid_frequent'), test_frequent=test['frequent'],
      train_loss=train_loss, steps=steps,
      tokens_seen=steps * args.train.batch_size * args.data.seq_len,
      wall_time_s=progress['elapsed_s'], tokens_per_s=tokens_per_s,
      **{f'valid_{key}': value for key, value in progress.get('valid_metrics', {}).items()},
      **{f'test_{key}': value for key, value in extra_metrics(test).items()})
