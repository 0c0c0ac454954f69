"""Training end to end: loss falls, device-count invariance, exact resume, bad input."""

import copy
import json
import math
import os
import signal
import time

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import brown
from factorized.config import build
from factorized.data import pipeline as data_lib
from factorized.evaluation import saved as eval_run
from factorized.runtime import machine, parallel
from factorized.train import checkpointing, trainer
from tests import pins, record_pins


def scalar_series(workdir, tag):
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'scalars': 0})
  events.Reload()
  return [(e.step, e.value) for e in events.Scalars(tag)]


def final_params(workdir, devices=1):
  run, _ = eval_run.restore_run(str(workdir), mesh=parallel.make_mesh(jax.devices()[:devices]))
  return jax.tree.leaves(jax.device_get(run.state.params))


def test_runlocal_brown_trains_in_seconds_and_its_loss_falls(brown_zip, tmp_path):
  del brown_zip  # the fixture makes sure $FACTORIZED_DATA_DIR holds it
  # One device, as a CPU user runs it. (With 8 fake host devices on a loaded 2-core machine,
  # XLA:CPU's collectives can starve its thread pool when per-device work is this large.)
  summary = trainer.train_and_evaluate(build.from_config(brown.get_config('runlocal')),
                                       str(tmp_path), mesh=parallel.make_mesh(jax.devices()[:1]))
  losses = [value for _, value in scalar_series(tmp_path, 'train/loss')]
  assert losses[-1] < losses[0] - 0.5
  assert summary['valid_ppl'] < summary['vocab_size'] / 3
  expected = {'config', 'vocab_size', 'params', 'flops_per_token', 'valid_ppl', 'best_valid_ppl',
              'test_ppl', 'train_loss', 'steps', 'tokens_seen', 'wall_time_s', 'tokens_per_s',
              'devices', 'versions'}
  saved = json.loads((tmp_path / 'summary.json').read_text())
  assert expected <= set(saved)
  assert saved['steps'] == 30 and saved['tokens_seen'] == 30 * 8 * 32
  assert set(saved['versions']) == {'jax', 'flax', 'optax', 'orbax-checkpoint'}
  assert saved['params']['total'] == sum(
      saved['params'][k] for k in ('embedding', 'output_head', 'non_embedding'))


# svd with the orthogonality penalty: its regulariser must not be counted once per device.
# QAT (int4 tables, per group of 4 columns, an untied head): the fake quantization too.
QAT = {'kind': 'svd', 'head': 'untied', 'quant_bits': 4, 'quant_group': 4}


@pytest.mark.parametrize('embed', [{'kind': 'dense'}, {'kind': 'svd', 'ortho_penalty': 0.1}, QAT])
def test_four_devices_match_one_device(tiny_config, tmp_path, embed):
  tiny_config.model.embed.update(embed)
  tiny_config.train.num_steps = 5
  results = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f'dev{devices}')
    summary = trainer.train_and_evaluate(
        build.from_config(tiny_config), workdir, mesh=parallel.make_mesh(jax.devices()[:devices]))
    assert math.isfinite(summary['train_loss'])
    results[devices] = summary, final_params(workdir, devices)
  (one, params_one), (four, params_four) = results[1], results[4]
  np.testing.assert_allclose(four['train_loss'], one['train_loss'], rtol=1e-5)
  np.testing.assert_allclose(four['valid_ppl'], one['valid_ppl'], rtol=1e-5)
  for a, b in zip(params_one, params_four, strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_grad_accumulation_matches_one_big_batch(tiny_config, tmp_path):
  tiny_config.train.num_steps = 4  # dropout stays on: its keys are per example
  one_device = parallel.make_mesh(jax.devices()[:1])
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'one'), mesh=one_device)
  tiny_config.train.grad_accum_steps = 2
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'two'), mesh=one_device)
  for a, b in zip(final_params(tmp_path / 'one'), final_params(tmp_path / 'two'), strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)


def interrupt_at(monkeypatch, batch_number):
  """Sends this process SIGTERM while the loop fetches batch `batch_number` (1-based)."""
  original = data_lib.TrainBatches.__next__
  calls = {'n': 0}

  def next_batch(self):
    calls['n'] += 1
    if calls['n'] == batch_number:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self)

  monkeypatch.setattr(data_lib.TrainBatches, '__next__', next_batch)


@pytest.mark.parametrize('embed', [{}, QAT])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_config, tmp_path,
                                                                  monkeypatch, embed):
  tiny_config.model.embed.update(embed)
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'straight'))
  with monkeypatch.context() as patch:
    interrupt_at(patch, 7)
    with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM at step 7'):
      trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'resumed'))
  assert checkpointing.Checkpointer(str(tmp_path / 'resumed')).latest_step() == 7
  assert not (tmp_path / 'resumed' / 'summary.json').exists()
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'resumed'))
  assert summary['steps'] == tiny_config.train.num_steps
  straight = final_params(tmp_path / 'straight')
  resumed = final_params(tmp_path / 'resumed')
  for a, b in zip(straight, resumed, strict=True):
    np.testing.assert_array_equal(a, b)  # bitwise on CPU


def test_a_stop_while_the_run_is_set_up_ends_it_at_its_first_step(tiny_config, tmp_path,
                                                                   monkeypatch):
  """SIGTERM before the loop (reading the corpus, building the model) is not lost: the run
  checkpoints its first step and stops, and the same command resumes from there."""
  build_run = trainer.build_run

  def signalled_build_run(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return build_run(*args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(trainer, 'build_run', signalled_build_run)
    with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM at step 1:'):
      trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 1
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  assert summary['steps'] == tiny_config.train.num_steps


def test_a_stop_during_the_final_evaluation_ends_it_and_the_rerun_gives_the_same_summary(
    tiny_config, tmp_path, monkeypatch):
  """SIGTERM while the test split is evaluated stops at once (nothing is left to checkpoint);
  no summary is written, and the same command, resuming at the last step, writes the
  uninterrupted run's summary (the train loss of the last step included)."""
  straight = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'a'))
  evaluator = trainer.Run.evaluator

  def signalled_evaluator(run, split, **kwargs):
    evaluate = evaluator(run, split, **kwargs)
    if split != 'test':
      return evaluate

    def signalled(params):
      os.kill(os.getpid(), signal.SIGTERM)
      return evaluate(params)

    return signalled

  with monkeypatch.context() as patch:
    patch.setattr(trainer.Run, 'evaluator', signalled_evaluator)
    with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM during the final evaluation'):
      trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'b'))
  assert not (tmp_path / 'b' / 'summary.json').exists()
  resumed = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / 'b'))
  for key in ('test_ppl', 'valid_ppl', 'best_valid_ppl', 'best_step', 'train_loss', 'steps',
              'test_bands'):
    assert resumed[key] == straight[key], key


def test_a_sweep_point_listens_for_a_stop_from_its_first_line(tiny_config, tmp_path,
                                                               monkeypatch):
  """A local sweep point's job stopped while it starts (before the trainer is even
  imported) checkpoints its first step and exits as interrupted, not training on."""
  from factorized.sweeps import launcher

  monkeypatch.setenv('SUBMITIT_EXECUTOR', 'local')
  monkeypatch.setattr(launcher, '_send_output_to', lambda path: None)  # keep pytest's output
  config = build.from_config(tiny_config)

  def signalled_load_saved(workdir):
    os.kill(os.getpid(), signal.SIGTERM)
    return config

  monkeypatch.setattr(launcher.build, 'load_saved', signalled_load_saved)
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exited:
    launcher.TrainPoint()(str(tmp_path))
  assert exited.value.code == launcher.EXIT_INTERRUPTED
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 1
  assert signal.getsignal(signal.SIGTERM) is handler  # the job's own handler is back


def test_the_loop_keeps_two_steps_in_flight_and_a_stop_checkpoints_within_two_steps(
    tiny_config, tmp_path, monkeypatch):
  # A deliberately slow step (a host callback sleeping STEP_S on the device's queue, after
  # the real step): dispatching stays instant, so a loop that never waited would queue
  # every step at once, and a stop would wait for the whole queue.
  step_s, counts = 0.25, {'dispatched': 0, 'finished': 0, 'in_flight_at_stop': None}
  tiny_config.train.update(num_steps=40, eval_every=40, ckpt_every=40, log_every=40)

  def sleep(value):
    time.sleep(step_s)
    counts['finished'] += 1
    return value

  slow = jax.jit(lambda loss: jax.pure_callback(sleep, jax.ShapeDtypeStruct((), loss.dtype),
                                                loss))
  make_step = trainer.Run.train_step

  def slow_train_step(run):
    step = make_step(run)

    def train_step(state, batch):
      state, metrics = step(state, batch)
      counts['dispatched'] += 1
      return state, {**metrics, 'loss': slow(metrics['loss'])}

    return train_step

  monkeypatch.setattr(trainer.Run, 'train_step', slow_train_step)
  original = data_lib.TrainBatches.__next__
  fetched = {'n': 0, 'signal_at': None}

  def next_batch(self):
    fetched['n'] += 1
    if fetched['n'] == 30:
      counts['in_flight_at_stop'] = counts['dispatched'] - counts['finished']
      fetched['signal_at'] = time.perf_counter()
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self)

  monkeypatch.setattr(data_lib.TrainBatches, '__next__', next_batch)
  with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM at step 30'):
    trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path),
                               mesh=parallel.make_mesh(jax.devices()[:1]))
  stopped_after_s = time.perf_counter() - fetched['signal_at']
  assert counts['in_flight_at_stop'] <= 2, counts
  # Steps 29 and 30 finish and the checkpoint is written: about two steps' time (plus the
  # save), where the 29 steps an unbounded loop would have queued by now take 7 s.
  assert stopped_after_s < 16 * step_s, stopped_after_s
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 30


def test_eval_matches_the_in_training_evaluation(tiny_config, tmp_path):
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  result = eval_run.evaluate_workdir(str(tmp_path), 'valid')
  assert result['step'] == tiny_config.train.num_steps
  np.testing.assert_allclose(result['ppl'], summary['valid_ppl'], rtol=1e-6)
  assert result['tokens'] == len(data_lib.prepare_corpus(tiny_config.data).splits['valid'])
  saved = json.loads((tmp_path / 'eval_valid.json').read_text())
  assert saved['valid_ppl'] == result['ppl']
  best = eval_run.evaluate_workdir(str(tmp_path), 'test', 'best')
  np.testing.assert_allclose(best['ppl'], summary['test_ppl'], rtol=1e-6)


def test_batch_not_divisible_by_the_devices_is_refused_before_compiling(tiny_config, tmp_path):
  tiny_config.train.batch_size = 6
  with pytest.raises(ValueError, match=r'train\.batch_size=6 must be a positive multiple of '
                                       r'the device count \(4, .*--config\.train\.batch_size=4'):
    trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path),
                               mesh=parallel.make_mesh(jax.devices()[:4]))


def test_a_workdir_with_another_config_is_refused(tiny_config, tmp_path):
  tiny_config.train.update(num_steps=2, warmup_steps=1, eval_every=2, ckpt_every=2)
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  before = sorted(p.name for p in tmp_path.iterdir())
  tiny_config.train.lr = 1e-4
  with pytest.raises(ValueError, match=r'train\.lr: 0\.003 -> 0\.0001'):
    trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_eval_without_a_checkpoint_says_to_train_first(tiny_config, tmp_path):
  from factorized.train import workdir as workdir_lib

  workdir_lib.prepare_workdir(tmp_path, build.from_config(tiny_config))
  with pytest.raises(FileNotFoundError, match='No checkpoint in .*train first'):
    eval_run.evaluate_workdir(str(tmp_path), 'valid')


# Reading the garbled files leaves tensorstore's event loop complaining after the fact.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_config, tmp_path,
                                                                     caplog):
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  steps = checkpointer.all_steps()
  latest = steps[-1]
  for root, _, files in os.walk(tmp_path / 'checkpoints' / str(latest) / 'state'):
    for name in files:
      if name != '_METADATA':
        with open(os.path.join(root, name), 'r+b') as f:
          f.write(b'\0garbage' * 16)
  run = trainer.build_run(build.from_config(tiny_config), str(tmp_path))
  with caplog.at_level('WARNING'):
    state, _ = checkpointer.restore(run.state)
  assert int(state.step) == steps[-2]
  assert f'Checkpoint of step {latest}' in caplog.text and 'unreadable' in caplog.text


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_config, tmp_path, monkeypatch):
  original = data_lib.TrainBatches.__next__
  calls = {'n': 0}

  def poisoned(self):  # from batch 6 on, targets out of range make the loss NaN
    calls['n'] += 1
    batch = original(self)
    if calls['n'] >= 6:
      batch['targets'] = np.full_like(batch['targets'], -(10**6))
    return batch

  monkeypatch.setattr(data_lib.TrainBatches, '__next__', poisoned)
  with pytest.raises(trainer.NonFiniteLoss, match='last good checkpoint .step 4.'):
    trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  assert checkpointing.Checkpointer(str(tmp_path)).all_steps() == [4]
  assert not math.isnan(final_params(tmp_path)[0].sum())


def test_kinds_see_the_same_batches_and_dropout_keys(tiny_config, tmp_path, monkeypatch):
  """At one seed the data order and the dropout key stream do not depend on the embedding."""
  seen = {}
  original = data_lib.TrainBatches.__next__

  def record(self):
    batch = original(self)
    seen.setdefault(tiny_config.model.embed.kind, []).append(batch['inputs'].copy())
    return batch

  monkeypatch.setattr(data_lib.TrainBatches, '__next__', record)
  tiny_config.train.num_steps = 3
  rngs = {}
  for kind in ('dense', 'svd'):  # the streams are built before, and apart from, the kind
    tiny_config.model.embed.kind = kind
    run = trainer.build_run(build.from_config(tiny_config), str(tmp_path / kind),
                            mesh=parallel.make_mesh(jax.devices()[:1]))
    rngs[kind] = np.asarray(run.state.rng)
    trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path / kind),
                               mesh=parallel.make_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(rngs['svd'], rngs['dense'])  # dropout keys derive from it
  for a, b in zip(seen['dense'], seen['svd'], strict=True):
    np.testing.assert_array_equal(a, b)


def test_band_perplexities_partition_the_split_and_a_stride_scores_every_token_once(
    tiny_config, tmp_path):
  tiny_config.train.num_steps = 6
  workdir = str(tmp_path / 'run')
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), workdir,
                                       mesh=parallel.make_mesh(jax.devices()[:1]))
  bands = summary['test_bands']
  assert list(bands) == ['1-100', '101-1000', '1001-10000', '10001+', '<unk>']
  run = trainer.build_run(build.from_config(tiny_config), workdir,
                          mesh=parallel.make_mesh(jax.devices()[:1]))
  num_test = run.corpus.splits['test'].size
  assert sum(band['tokens'] for band in bands.values()) == num_test
  # The bands' NLLs add up to the split's.
  nll = sum(band['loss'] * band['tokens'] for band in bands.values() if band['tokens'])
  np.testing.assert_allclose(math.exp(nll / num_test), summary['test_ppl'], rtol=1e-5)
  assert bands['101-1000']['tokens'] == 0 and bands['101-1000']['ppl'] is None
  one = parallel.make_mesh(jax.devices()[:1])
  default = eval_run.evaluate_workdir(workdir, 'test', 'best', mesh=one)
  assert default['ppl'] == summary['test_ppl'] and default['stride'] == tiny_config.data.seq_len
  assert json.loads((tmp_path / 'run' / 'eval_test.json').read_text())['bands'] == bands
  overlapping = eval_run.evaluate_workdir(workdir, 'test', 'best', stride=2, mesh=one)
  assert overlapping['tokens'] == num_test and overlapping['stride'] == 2
  assert overlapping['ppl'] != default['ppl']  # more context per token: another number
  with pytest.raises(ValueError, match=r'--stride=0 must be an integer in \[1, data.seq_len=8\]'):
    eval_run.evaluate_workdir(workdir, 'test', stride=0)


def table_of(model) -> np.ndarray:
  """The model's VxD input table, reconstructed from its factors (in the test only)."""
  product = np.asarray(model.embed.factors()[0], np.float64)
  for factor in model.embed.factors()[1:]:
    product = product @ np.asarray(factor, np.float64)
  return product


def first_step_movement(run: trainer.Run) -> float:
  """|W after - W before|_F for one train step of `run` (fresh AdamW) on its first batch."""
  batch = next(run.train_batches())
  before = table_of(run.model())
  state, _ = run.train_step()(run.state, parallel.global_batch(batch, run.mesh))
  return float(np.linalg.norm(table_of(run.model(state.params)) - before))


def test_an_ortho_penalty_run_moves_its_table_as_fast_as_a_penalty_free_one(tiny_config,
                                                                             tmp_path):
  """lambda > 0 starts on the constraint set with U at the lambda = 0 scale, so one Adam step
  moves U s V as far (an orthonormal U, entries ~1/sqrt(V), would move it much further)."""
  tiny_config.train.warmup_steps = 0  # the first step at the peak rate
  one = parallel.make_mesh(jax.devices()[:1])
  moved = {}
  for name, kind, penalty in [('dense', 'dense', 0.0), ('svd', 'svd', 0.0),
                              ('svd_penalty', 'svd', 0.1)]:
    tiny_config.model.embed.update(kind=kind, ortho_penalty=penalty)
    run = trainer.build_run(build.from_config(tiny_config), str(tmp_path / name), mesh=one)
    moved[name] = first_step_movement(run)
  assert 1 / 1.5 < moved['svd'] / moved['dense'] < 1.5, moved
  assert 1 / 1.25 < moved['svd_penalty'] / moved['svd'] < 1.25, moved


@pytest.mark.parametrize('kind,head', [('adaptive', 'tied'), ('tt', 'untied')])
def test_new_kinds_train_restore_and_take_their_frequency_order_from_the_run(
    kind, head, tiny_config, tmp_path):
  tiny_config.model.embed.update(kind=kind, head=head)
  workdir = tmp_path / kind
  one = parallel.make_mesh(jax.devices()[:1])
  summary = trainer.train_and_evaluate(build.from_config(tiny_config), str(workdir), mesh=one)
  losses = [value for _, value in scalar_series(workdir, 'train/loss')]
  assert losses[-1] < losses[0] and math.isfinite(summary['test_ppl'])
  run, step = eval_run.restore_run(str(workdir), 'best', mesh=one)  # nnx.List parameters
  assert step == summary['best_step']
  np.testing.assert_allclose(run.evaluator('test')(run.state.params)['ppl'],
                             summary['test_ppl'], rtol=1e-6)
  counts = data_lib.load_train_counts(workdir)
  np.testing.assert_array_equal(counts, np.bincount(run.corpus.splits['train'],
                                                    minlength=run.corpus.vocab_size))
  if kind == 'adaptive':  # the most frequent train tokens come first, whatever their ids
    position_V = np.asarray(run.model().embed.position_V[...])
    np.testing.assert_array_equal(np.argsort(position_V), np.argsort(-counts, kind='stable'))


@pytest.mark.parametrize('kind', pins.KINDS)
def test_runlocal_numbers_are_the_pinned_ones(brown_zip, tmp_path, kind):
  # configs/brown.py:runlocal on one device, every kind at rank 8: losses, perplexities,
  # band perplexities, parameter and FLOP counts as recorded in tests/data/pins/ under this
  # suite's XLA flags (conftest.py; -O0 moves float32 bits against a default build).
  # Bitwise on a machine class that has its own file (the instruction set, jaxlib and device
  # count: factorized/runtime/machine.py); elsewhere within float32 rounding of the
  # reference file (tests/pins.py), counts exactly. In the reference, dense, albert and svd
  # are what the code computed before adaptive's and tt's heads were rewritten; adaptive and
  # tt are from after. Any change that moves one of these bits must say why.
  del brown_zip
  machine_id, _ = machine.fingerprint()
  summary = pins.run(kind, tmp_path)
  own = pins.load(machine_id)
  if own is not None:
    where = f'bitwise mode: machine class {machine_id}, {pins.path_of(machine_id)}'
    assert kind in own, f'{where} has no {kind}: python -m tests.record_pins --force'
    assert pins.pinned_part(summary, own[kind]) == own[kind], where
  else:
    where = (f'tolerant mode (rtol {pins.RTOL:g}): machine class {machine_id} has no pins, '
             f'compared with the reference {pins.path_of(pins.REFERENCE_ID)}')
    reference = pins.reference()[kind]
    largest, at = pins.largest_relative_difference(summary, reference)
    print(f'{where}: largest relative difference {largest:.2e}',  # -rP shows it
          f'({at})' if largest else '(every float bitwise equal)')
    wrong = pins.mismatches(summary, reference, pins.RTOL)
    assert not wrong, f'{where}:\n' + '\n'.join(wrong)


def test_the_tolerant_pin_comparison_catches_a_changed_number():
  pinned = pins.reference()['dense']
  assert pins.mismatches(pinned, pinned, pins.RTOL) == []
  rounded = copy.deepcopy(pinned)  # float32 rounding of another instruction set
  rounded['valid_ppl'] *= 1 + 1e-8
  assert pins.mismatches(rounded, pinned, pins.RTOL) == []
  changed = copy.deepcopy(pinned)
  changed['valid_ppl'] *= 1 + 1e-5
  assert [line.split(':')[0] for line in pins.mismatches(changed, pinned, pins.RTOL)] == [
      'valid_ppl']
  changed = copy.deepcopy(pinned)  # counts exactly, however close
  changed['params']['total'] += 1
  changed['valid_bands']['10001+']['loss'] = 0.0  # an empty band stays None
  assert [line.split(':')[0] for line in pins.mismatches(changed, pinned, pins.RTOL)] == [
      'params.total', 'valid_bands.10001+.loss']


def test_recording_pins_keeps_an_existing_file_unless_forced(monkeypatch):
  monkeypatch.setattr(machine, 'fingerprint', lambda: (pins.REFERENCE_ID, {}))
  monkeypatch.setattr(pins, 'run', lambda *args: pytest.fail('trained before refusing'))
  with pytest.raises(SystemExit, match='exists: .* rerun with --force'):
    record_pins.main([])


def test_a_run_is_built_from_a_spec_only(tiny_config, tmp_path):
  with pytest.raises(TypeError, match=r'takes a Spec, not a ConfigDict: pass .*build\.from_config'):
    trainer.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # refused before anything is written
