"""factorized/sweeps/tuned.py: the commands that train each point's tuned configuration at
more seeds, chosen by valid perplexity, named as the seed-0 run of that configuration."""

import json
import shlex

import pytest

from configs import rank_sweep
from factorized.analysis import table as sweep_table
from factorized.sweeps import tuned
from tests.test_sweep import fake_run


def set_config(run_dir, **fields):
  """Sets dotted config fields of a fake run's summary.json, whose model is the rank sweep's
  (model_dim 128; dense at the config's rank, which it does not use) unless `fields` say."""
  path = run_dir / 'summary.json'
  summary = json.loads(path.read_text())
  made = rank_sweep.get_config('kinds=dense')
  fields = {'model.model_dim': made.model.model_dim, **fields}
  if summary['config']['model']['embed']['kind'] == 'dense':
    fields = {'model.embed.rank': made.model.embed.rank, **fields}
  for dotted, value in fields.items():
    node = summary['config']
    *parents, last = dotted.split('.')
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  path.write_text(json.dumps(summary))


def test_each_point_gets_its_tuned_configuration_at_the_seeds_given(tmp_path, capsys):
  # dense: dropout 0.1 is best on valid (though 0.2 tests better); svd 16: 0.2 at 6e-3.
  # A QAT dense run (quant_bits 4) with the best valid of all: another precision, not a
  # configuration dense's float32 point is tuned over.
  runs = (('dense', 'dense', 16, 0.2, 3e-3, 50.0, 90.0), ('dense_d1', 'dense', 16, 0.1, 3e-3,
                                                           45.0, 95.0),
          ('svd', 'svd', 16, 0.2, 3e-3, 60.0, 99.0), ('svd_lr', 'svd', 16, 0.2, 6e-3, 55.0, 98.0),
          ('svd_d1', 'svd', 16, 0.1, 3e-3, 58.0, 97.0))
  for run, kind, rank, dropout, lr, valid, test in runs:
    fake_run(tmp_path, run, kind, rank, valid=valid, test=test, lr=lr)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'model.embed.quant_bits': 0})
  fake_run(tmp_path, 'dense_qat', 'dense', 16, valid=40.0, test=100.0)
  set_config(tmp_path / 'dense_qat', **{'model.dropout': 0.2, 'model.embed.quant_bits': 4})
  chosen = sweep_table.tuned(sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]),
                             over=None)
  assert sorted(chosen['over']) == ['dropout', 'dropout,lr']  # never quant_bits
  tuned.main([str(tmp_path), '--seeds=1+2', '--', '--config.data.vocab_from=train',
              f'--workdir={tmp_path}'])
  printed = capsys.readouterr().out.splitlines()
  assert printed == [
      'python train.py --config=configs/rank_sweep.py:kinds=dense,lrs=0.003,'
      'axis=model.dropout:0.1/model.embed.quant_bits:0,seeds=1+2 '
      f'--config.data.vocab_from=train --workdir={tmp_path}',
      'python train.py --config=configs/rank_sweep.py:kinds=svd,ranks=16,lrs=0.006,'
      'axis=model.dropout:0.2/model.embed.quant_bits:0,seeds=1+2 '
      f'--config.data.vocab_from=train --workdir={tmp_path}']
  # What the sweep makes of it: the one point, at those values and seeds.
  argument = shlex.split(printed[1])[2].split(':', 1)[1]
  points = rank_sweep.get_sweep(argument)
  assert [(p['model.embed.kind'], p['model.embed.rank'], p['train.lr'], p['seed'])
          for p in points] == [('svd', 16, 0.006, 1), ('svd', 16, 0.006, 2)]
  assert all(p.get('model.dropout', 0.2) == 0.2 for p in points)


def test_a_search_that_never_moved_the_learning_rate_is_tuned_over_what_it_moved(tmp_path):
  for run, dropout, valid in (('dense', 0.2, 50.0), ('dense_d3', 0.3, 45.0)):
    fake_run(tmp_path, run, 'dense', 16, valid=valid, lr=6e-3)
    set_config(tmp_path / run, **{'model.dropout': dropout})
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  chosen = sweep_table.tuned(table, over=None)
  assert (list(chosen['over']), list(chosen['dropout'])) == (['dropout'], [0.3])
  assert 'lr' not in chosen.columns
  assert tuned.commands(tmp_path, '1+2', []) == [
      'python train.py --config=configs/rank_sweep.py:kinds=dense,lrs=0.006,'
      'axis=model.dropout:0.3,seeds=1+2']  # the one rate, though never swept


def test_a_qat_point_keeps_its_precision_beside_runs_saved_before_it_existed(tmp_path):
  # dense saved before model.embed.quant_bits existed (float32), and int4 dense at two
  # dropouts: the int4 point's command trains int4.
  fake_run(tmp_path, 'dense', 'dense', 16, valid=50.0, lr=6e-3)
  for run, dropout, valid in (('qat', 0.2, 60.0), ('qat_d3', 0.3, 55.0)):
    fake_run(tmp_path, run, 'dense', 16, valid=valid, lr=6e-3)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'model.embed.quant_bits': 4})
  set_config(tmp_path / 'dense', **{'model.dropout': 0.2})
  assert tuned.commands(tmp_path, '1', []) == [
      'python train.py --config=configs/rank_sweep.py:kinds=dense,lrs=0.006,'
      'axis=model.dropout:0.3/model.embed.quant_bits:4,seeds=1']


def test_a_field_every_run_held_away_from_the_sweeps_value_is_given_too(tmp_path):
  # Every search command said axis=train.num_steps:3000 and data.vocab_from=train, and only
  # the dropout moved: num_steps is no axis of the reports, but the seeds must train 3,000
  # steps; vocab_from is the `--` arguments' to give. dpq's group count is its size, given
  # as the search gave it.
  runs = (('dense', 'dense', 16, 0.2, 50.0), ('dense_d3', 'dense', 16, 0.3, 45.0),
          ('dpq', 'dpq', 64, 0.2, 70.0), ('dpq_d3', 'dpq', 64, 0.3, 75.0))
  for run, kind, rank, dropout, valid in runs:
    fake_run(tmp_path, run, kind, rank, valid=valid, lr=6e-3, num_steps=3000)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'data.vocab_from': 'train'})
  for run in ('dpq', 'dpq_d3'):
    set_config(tmp_path / run, **{'model.embed.dpq_groups': 32})
  assert tuned.commands(tmp_path, '1+2', ['--config.data.vocab_from=train']) == [
      'python train.py --config=configs/rank_sweep.py:kinds=dense,lrs=0.006,'
      'axis=model.dropout:0.3/train.num_steps:3000,seeds=1+2 --config.data.vocab_from=train',
      'python train.py --config=configs/rank_sweep.py:kinds=dpq,ranks=64,lrs=0.006,'
      'axis=model.dropout:0.2/train.num_steps:3000/model.embed.dpq_groups:32,seeds=1+2 '
      '--config.data.vocab_from=train']
  # Without the `--` argument, the command gives the field itself.
  assert 'data.vocab_from:train' in tuned.commands(tmp_path, '1', [])[0]
  # What the sweep makes of a command: the tuned run's config but its seed.
  argument = tuned.commands(tmp_path, '1', [])[1].split()[2].split(':', 1)[1]
  point, = rank_sweep.get_sweep(argument)
  assert (point['train.num_steps'], point['model.embed.dpq_groups'], point['seed']) == (
      3000, 32, 1)


def test_a_field_no_axis_can_give_fails_naming_it(tmp_path):
  for run, dropout, valid in (('tt', 0.2, 50.0), ('tt_d3', 0.3, 45.0)):
    fake_run(tmp_path, run, 'tt', 16, valid=valid, lr=6e-3)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'model.embed.tt_vocab_factors':
                                  [10, 10, 10]})
  with pytest.raises(ValueError, match=r'tt_d3: model.embed.tt_vocab_factors = \(10, 10, 10\) '
                     r'differs .* --config.model.embed.tt_vocab_factors='):
    tuned.commands(tmp_path, '1', [])


def test_the_new_seeds_are_named_as_the_tuned_run_but_its_seed(tmp_path):
  # The search gave num_steps before dropout; the seeds' sub-workdirs keep that order.
  from factorized.sweeps import sweep

  names = {0.1: 'svd_rank32_lr0.006_num_steps3000_dropout0.1_seed0',
           0.3: 'svd_rank32_lr0.006_num_steps3000_dropout0.3_seed0'}
  for dropout, run in names.items():
    fake_run(tmp_path, run, 'svd', 32, valid=50.0 + dropout, lr=6e-3, num_steps=3000)
    set_config(tmp_path / run, **{'model.dropout': dropout})
  command, = tuned.commands(tmp_path, '1+2', [])
  points = rank_sweep.get_sweep(shlex.split(command)[2].split(':', 1)[1])
  assert [sweep.point_name(point) for point in points] == [
      'svd_rank32_lr0.006_num_steps3000_dropout0.1_seed1',
      'svd_rank32_lr0.006_num_steps3000_dropout0.1_seed2']


def test_a_command_gives_exact_values_and_the_head_rank_its_run_had(tmp_path):
  # Values that six significant digits would round; an untied svd head at the input's rank
  # (saved head_rank 0: no head_ranks= argument); a cache directory is where the run read,
  # not what it computed.
  for run, dropout, valid in (('svd', 0.123456789, 50.0), ('svd_d3', 0.3, 55.0)):
    fake_run(tmp_path, run, 'svd', 32, head='untied', head_kind='svd', valid=valid,
             lr=0.0031622777)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'data.cache_dir': '/scratch/c'})
  assert tuned.commands(tmp_path, '1', []) == [
      'python train.py --config=configs/rank_sweep.py:kinds=svd,ranks=32,head=untied,'
      'head_kinds=svd,lrs=0.0031622777,axis=model.dropout:0.123456789,seeds=1']


def test_a_value_no_axis_can_hold_and_a_point_the_sweep_cannot_make_fail_naming_them(
    tmp_path):
  for run, dropout, valid in (('dense', 0.2, 50.0), ('dense_d3', 0.3, 45.0)):
    fake_run(tmp_path, run, 'dense', 16, valid=valid, lr=6e-3)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'data.path': '/data/ptb'})
  with pytest.raises(ValueError, match=r"dense_d3: data.path = '/data/ptb' differs .* "
                     r'--config.data.path='):
    tuned.commands(tmp_path, '1', [])
  given = tuned.commands(tmp_path, '1', ['--config.data.path=/data/ptb'])[0]
  assert 'data.path:' not in given and given.endswith(' --config.data.path=/data/ptb')
  # runlocal caps ranks at its model width (32): rank 64 is no point of its sweep.
  local = tmp_path / 'local'
  for run, dropout, valid in (('svd', 0.2, 50.0), ('svd_d3', 0.3, 45.0)):
    fake_run(local, run, 'svd', 64, valid=valid, lr=3e-3, num_steps=30)
    set_config(local / run, **{'model.dropout': dropout, 'model.model_dim': 32})
  with pytest.raises(ValueError, match=r"svd_d3: the rank sweep makes no point of .* "
                     r'--sweep_args'):
    tuned.commands(local, '1', [], sweep_args='runlocal')


def test_the_sweeps_own_arguments_come_first(tmp_path):
  for run, dropout, valid in (('svd', 0.2, 50.0), ('svd_d3', 0.3, 45.0)):
    fake_run(tmp_path, run, 'svd', 16, valid=valid, lr=3e-3, num_steps=30)
    set_config(tmp_path / run, **{'model.dropout': dropout, 'model.model_dim': 32})
  assert tuned.commands(tmp_path, '1', [], sweep_args='runlocal') == [
      'python train.py --config=configs/rank_sweep.py:runlocal,kinds=svd,ranks=16,lrs=0.003,'
      'axis=model.dropout:0.3,seeds=1']


def test_a_name_part_is_matched_whole_longer_fields_first():
  axes = {'train.batch_size': 64, 'model.dropout': 0.1, 'eval.batch_size_x': 64}
  run = 'dense_eval_batch_size_x64_dropout0.1_batch_size64_seed0'
  assert list(tuned._in_name_order(axes, run)) == [
      'eval.batch_size_x', 'model.dropout', 'train.batch_size']
  # A float field named as the sweep types it ('2.0'), given as the axis writes it ('2').
  assert list(tuned._in_name_order({'model.dropout': 0.1, 'model.embed.band_factor': 2.0},
                                   'adaptive_rank128_band_factor2.0_dropout0.1_seed0')) == [
      'model.embed.band_factor', 'model.dropout']
