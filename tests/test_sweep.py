"""Rank sweeps: the points, a killed and resumed sweep end to end, failures, the reports."""

import csv
import json
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import brown, rank_sweep
from factorized.analysis import comparison
from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table
from factorized.config import build
from factorized.sweeps import sweep
from tests.test_train_cli import cli_env


def names(arg):
  return [sweep.point_name(point) for point in rank_sweep.get_sweep(arg)]


def test_the_sweep_is_dense_then_albert_and_svd_at_ranks_capped_at_the_model_width():
  ranks = [8, 16, 32, 64, 128]  # brown.py's model_dim is 128: 256 is dropped
  assert names(None) == (['dense'] + [f'albert_rank{r}' for r in ranks]
                         + [f'svd_rank{r}' for r in ranks])
  assert names('gpu')[-1] == 'svd_rank256'  # model_dim 512
  assert names('runlocal') == ['dense', 'albert_rank8', 'albert_rank16', 'albert_rank32',
                               'svd_rank8', 'svd_rank16', 'svd_rank32']
  assert names('runlocal,head=untied')[:2] == ['dense_untied', 'albert_rank8_untied']
  assert names('runlocal,head=both,kinds=svd,ranks=4+64') == ['svd_rank4', 'svd_rank4_untied']
  # Points differ from the base config in exactly their overrides.
  base = rank_sweep.get_config('runlocal')
  points = sweep.make_points(base, rank_sweep.get_sweep('runlocal'))
  assert base.to_dict() == brown.get_config('runlocal').to_dict()
  svd16 = next(p for p in points if p.name == 'svd_rank16').config
  assert svd16 == build.from_config(brown.get_config('runlocal,kind=svd,rank=16'))
  with pytest.raises(ValueError, match=r"overrides 'model\.embed\.size', which is not a config"):
    sweep.make_points(base, [{'model.embed.size': 3}])
  with pytest.raises(ValueError, match=r'kinds=.*expected a \+-separated subset'):
    rank_sweep.get_sweep('kinds=dense+lora')


def has_checkpoint(run_dir) -> bool:
  checkpoints = run_dir / 'checkpoints'
  return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


def sweep_command(repo_root, workdir, text_config, *extra,
                  sweep='runlocal,kinds=dense+svd,ranks=4+32'):
  data = text_config
  return [sys.executable, 'train.py', f'--config=configs/rank_sweep.py:{sweep}',
          f'--workdir={workdir}', '--config.data.corpus=text',
          f'--config.data.train_files={data.train_files}',
          f'--config.data.valid_files={data.valid_files}',
          f'--config.data.test_files={data.test_files}', '--config.data.vocab_size=0',
          '--config.data.min_freq=2', '--config.data.seq_len=8',
          f'--config.data.cache_dir={data.cache_dir}',
          # model_dim 16 < rank 32: that point fails (its rank is out of range).
          '--config.model.model_dim=16', '--config.model.mlp_dim=32',
          '--config.train.num_steps=400', '--config.train.batch_size=8',
          '--config.train.eval_batch_size=8', '--config.train.warmup_steps=2',
          '--config.train.eval_every=200', '--config.train.ckpt_every=100',
          '--config.train.log_every=50', *extra]


def test_a_killed_sweep_resumes_skips_finished_points_and_isolates_failures(
    text_config, tmp_path, repo_root):
  workdir = tmp_path / 'sweep'
  cmd = sweep_command(repo_root, workdir, text_config)
  # 1. One point at a time; SIGTERM once dense has finished and svd_rank4 has a checkpoint.
  first = subprocess.Popen(cmd, cwd=repo_root, env=cli_env(1), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and first.poll() is None and not has_checkpoint(
      workdir / 'svd_rank4'):
    time.sleep(0.05)
  first.send_signal(signal.SIGTERM)
  out, _ = first.communicate(timeout=180)
  assert first.returncode == 143, out[-3000:]
  assert "interrupted ['svd_rank4'], not started ['svd_rank32']" in out
  assert 'Run the same command again to resume' in out
  assert (workdir / 'dense' / 'summary.json').exists()
  assert not (workdir / 'svd_rank4' / 'summary.json').exists()

  # 2. The same command, two points at a time: dense is skipped, svd_rank4 resumes half-way,
  # and svd_rank32, failing beside it, does not stop it.
  second = subprocess.run([*cmd, '--sweep_workers=2', '--sweep_progress_every_s=1'],
                          cwd=repo_root, env=cli_env(1), capture_output=True, text=True,
                          timeout=300)
  assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
  assert 'dense: finished earlier, skipped' in second.stdout
  # Not a terminal: plain progress lines with the steps and an ETA from measured rates.
  assert re.search(r'^sweep: [0-2]/2 points, [\d,]+/800 steps .*ETA \d+:\d\d:\d\d \| '
                   r'svd_rank4 [\d,]+/400 loss', second.stdout, re.M), second.stdout[-3000:]
  listed = second.stdout.split('1 of 3 points failed:')[-1]
  # The job's error, then the tail of its train.log.
  assert 'svd_rank32: ValueError: model.embed.rank=32 is out of range' in listed
  assert f'the end of {workdir / "svd_rank32" / "train.log"}' in listed
  resumed = re.findall(r'Resumed \S+ at step (\d+)',
                       (workdir / 'svd_rank4' / 'train.log').read_text())
  assert len(resumed) == 1 and 0 < int(resumed[0]) < 400
  for name in ('dense', 'svd_rank4'):
    summary = json.loads((workdir / name / 'summary.json').read_text())
    assert summary['steps'] == 400
    assert summary['config']['model']['model_dim'] == 16  # overrides reach every point
  assert json.loads((workdir / 'svd_rank32' / 'config.json').read_text())['train'][
      'num_steps'] == 400

  rows = list(csv.DictReader((workdir / 'summary.csv').open()))
  assert [(r['run'], r['kind'], r['rank']) for r in rows] == [('dense', 'dense', ''),
                                                              ('svd_rank4', 'svd', '4')]
  svd4 = json.loads((workdir / 'svd_rank4' / 'summary.json').read_text())
  assert float(rows[1]['test_ppl']) == svd4['test_ppl']
  assert int(rows[1]['embedding_params']) == svd4['params']['embedding']
  assert 'Not finished (no summary.json yet): svd_rank32' in (workdir / 'summary.md').read_text()
  assert (workdir / 'ppl_vs_rank.png').read_bytes()[:4] == b'\x89PNG'
  assert read_scalars(workdir / 'sweep', 'ppl_vs_rank/svd') == [(4, pytest.approx(
      svd4['test_ppl'], rel=1e-6))]


def read_scalars(run_dir, tag):
  events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={'scalars': 0})
  events.Reload()
  return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()[
      'scalars'] else []


def fake_run(root, name, kind, rank, head='tied', valid=50.0, test=60.0, seed=0, bands=None,
             lr=3e-3, num_steps=1500, best_step=None, head_kind=None, head_rank=0):
  """A run directory holding only what the reports read from summary.json (`head_kind`: an
  untied head of its own kind at `head_rank`)."""
  vocab, dim = 1000, 64

  def count(kind, rank):
    return {'dense': vocab * dim, 'albert': vocab * rank + rank * dim + dim,
            'svd': vocab * rank + rank + rank * dim,
            'tt': 2000 * rank, 'dpq': rank * dim,  # tt, dpq, adaptive: made-up counts
            'adaptive': 3 * vocab * rank // 4}[kind]

  embedding = count(kind, rank)
  head_only = 0 if head == 'tied' else count(head_kind or 'dense', head_rank or rank)
  embed = {'kind': kind, 'rank': rank, 'head': head}
  if head_kind is not None:
    embed.update(head_kind=head_kind, head_rank=head_rank)
  summary = {'config': {'seed': seed, 'train': {'lr': lr, 'num_steps': num_steps}, 'model': {
                 'model_dim': dim, 'embed': embed}},
             'vocab_size': vocab,
             'params': {'embedding': embedding, 'output_head': head_only,
                        'vocab': embedding + head_only, 'total': embedding + head_only + 5000},
             'valid_ppl': valid, 'best_valid_ppl': valid, 'test_ppl': test,
             'tokens_per_s': 1234.5, 'steps': num_steps, 'best_step': best_step or num_steps,
             'wall_time_s': 600.0, 'test_bands': bands or {}}
  (root / name).mkdir(parents=True)
  (root / name / 'summary.json').write_text(json.dumps(summary))


def test_reports_are_rebuilt_from_the_directory_each_time(tmp_path):
  fake_run(tmp_path, 'dense', 'dense', 16, valid=40.0, test=45.0)
  fake_run(tmp_path, 'svd_rank8', 'svd', 8, valid=70.0, test=75.0)
  fake_run(tmp_path, 'svd_rank4', 'svd', 4, valid=90.0, test=95.0)
  fake_run(tmp_path, 'albert_rank4_untied', 'albert', 4, head='untied')
  fake_run(tmp_path, 'tt_rank4', 'tt', 4, valid=80.0, test=85.0)
  posthoc = {'split': 'test', 'dense_ppl': 45.0, 'head': 'tied',
             'ppl_by_rank': {'4': 300.0, '8': 200.0},
             'params_by_rank': {'4': {'embedding': 4260, 'total': 9260},
                                '8': {'embedding': 8520, 'total': 13520}},
             'finetune_steps': 10, 'finetuned_ppl_by_rank': {'4': 100.0, '8': 80.0}}
  (tmp_path / 'dense' / 'posthoc_svd_test.json').write_text(json.dumps(posthoc))
  weighted = {**posthoc, 'method': 'posthoc_svd_freq', 'ppl_by_rank': {'4': 250.0}}
  del weighted['finetuned_ppl_by_rank'], weighted['finetune_steps']
  (tmp_path / 'dense' / 'posthoc_svd_freq_test.json').write_text(json.dumps(weighted))
  (tmp_path / 'half_done').mkdir()
  (tmp_path / 'half_done' / 'config.json').write_text('{}')

  table = sweep_report.write_reports(tmp_path)
  assert table == (tmp_path / 'summary.md').read_text()
  assert 'Not finished (no summary.json yet): half_done.' in table
  first_csv = (tmp_path / 'summary.csv').read_text()
  rows = list(csv.DictReader(first_csv.splitlines()))
  assert [(r['run'], r['kind'], r['rank']) for r in rows] == [
      ('dense', 'dense', ''), ('svd_rank4', 'svd', '4'), ('svd_rank8', 'svd', '8'),
      ('tt_rank4', 'tt', '4'),
      ('dense', 'posthoc_svd', '4'), ('dense', 'posthoc_svd', '8'),
      ('dense', 'posthoc_svd_freq', '4'),
      ('dense', 'posthoc_svd_ft10', '4'), ('dense', 'posthoc_svd_ft10', '8'),
      ('albert_rank4_untied', 'albert', '4')]
  assert rows[4]['valid_ppl'] == '' and float(rows[4]['test_ppl']) == 300.0
  # Every point by vocab params, whatever its rank means: tt_rank4 (8,000) between svd ranks.
  by_params = table.split('By vocabulary parameters')[1].split('Every run:')[0]
  order = [line.split(' | ')[1] for line in by_params.splitlines() if line.startswith('| ')][1:]
  assert order[:6] == ['svd', 'posthoc_svd', 'posthoc_svd_freq', 'posthoc_svd_ft10', 'tt',
                       'svd'], order
  assert '| 4,260 | svd | tied | 4 | 95.00 | yes |' in by_params
  assert list(rows[0]) == list(sweep_table.COLUMNS)

  sweep_report.write_reports(tmp_path)  # a rerun rewrites, it does not append
  assert (tmp_path / 'summary.csv').read_text() == first_csv
  assert len(list((tmp_path / 'sweep').glob('events.out.tfevents*'))) == 1
  run = tmp_path / 'sweep'
  assert read_scalars(run, 'ppl_vs_rank/svd') == [(4, 95.0), (8, 75.0)]
  assert read_scalars(run, 'valid_ppl_vs_rank/svd') == [(4, 90.0), (8, 70.0)]
  assert read_scalars(run, 'ppl_vs_rank/posthoc_svd') == [(4, 300.0), (8, 200.0)]
  assert read_scalars(run, 'ppl_vs_rank/posthoc_svd_ft10') == [(4, 100.0), (8, 80.0)]
  assert read_scalars(run, 'ppl_vs_rank/dense') == [(64, 45.0)]  # at its full rank min(V, D)
  assert read_scalars(run, 'ppl_vs_vocab_params/svd') == [(4260, 95.0), (8520, 75.0)]
  assert read_scalars(run, 'ppl_vs_vocab_params/dense') == [(64000, 45.0)]
  assert read_scalars(run, 'ppl_vs_rank/albert_untied') == [(4, 60.0)]
  assert (tmp_path / 'ppl_vs_rank.png').read_bytes()[:4] == b'\x89PNG'


def test_seeds_run_every_point_at_each_seed_and_the_reports_aggregate_them(tmp_path):
  assert names('runlocal,kinds=dense+svd,ranks=8,seeds=2+0') == [
      'dense_seed0', 'dense_seed2', 'svd_rank8_seed0', 'svd_rank8_seed2']
  points = sweep.make_points(rank_sweep.get_config('runlocal'),
                             rank_sweep.get_sweep('runlocal,kinds=svd,ranks=8,seeds=0+1'))
  assert [p.config.seed for p in points] == [0, 1]
  with pytest.raises(ValueError, match=r'seeds=.*e\.g\. seeds=0\+1\+2'):
    rank_sweep.get_sweep('seeds=a')
  bands = {'1-100': {'ppl': 10.0, 'tokens': 5}, '101-1000': {'ppl': 100.0, 'tokens': 3}}
  for seed, (valid, test) in enumerate([(70.0, 75.0), (72.0, 79.0), (74.0, 77.0)]):
    fake_run(tmp_path, f'svd_rank8_seed{seed}', 'svd', 8, valid=valid, test=test, seed=seed,
             bands={k: {**v, 'ppl': v['ppl'] + seed} for k, v in bands.items()})
  fake_run(tmp_path, 'dense_seed0', 'dense', 16, valid=40.0, test=45.0, bands=bands)
  report = sweep_report.write_reports(tmp_path)
  rows = list(csv.DictReader((tmp_path / 'aggregate.csv').open()))
  svd = next(r for r in rows if r['kind'] == 'svd')
  assert svd['seeds'] == '3' and float(svd['test_ppl_mean']) == 77.0
  assert float(svd['test_ppl_std']) == 2.0  # sample std of 75, 79, 77
  assert float(svd['test_ppl@101-1000_mean']) == 101.0
  dense = next(r for r in rows if r['kind'] == 'dense')
  assert dense['seeds'] == '1' and dense['test_ppl_std'] == ''
  assert '| svd | tied | 8 | 3 |' in report and '77.00 ± 2.00' in report
  per_run = list(csv.DictReader((tmp_path / 'summary.csv').open()))
  assert [r['seed'] for r in per_run] == ['0', '0', '1', '2']
  assert list(per_run[0])[-2:] == ['test_ppl@1-100', 'test_ppl@101-1000']
  for name in sweep_report.PNG_FILES:
    assert (tmp_path / name).read_bytes()[:4] == b'\x89PNG'
  assert read_scalars(tmp_path / 'sweep', 'ppl_vs_rank/svd') == [(8, 77.0)]


def test_pareto_front_keeps_the_undominated_points():
  table = pd.DataFrame({'p': [10, 20, 30, 40, 15], 'ppl': [90.0, 80.0, 85.0, 70.0, 95.0]})
  front = sweep_table.pareto_front(table, 'p', 'ppl')
  assert list(front['p']) == [10, 20, 40]


def test_an_axis_sweeps_any_field_and_names_its_points_and_a_base_value_keeps_the_old_name():
  points = rank_sweep.get_sweep('kinds=dense+svd,ranks=32,lrs=1.5e-3+3e-3+6e-3,seeds=0')
  assert [sweep.point_name(point) for point in points] == [
      'dense_lr0.0015_seed0', 'dense_seed0', 'dense_lr0.006_seed0',
      'svd_rank32_lr0.0015_seed0', 'svd_rank32_seed0', 'svd_rank32_lr0.006_seed0']
  both = rank_sweep.get_sweep(
      'kinds=adaptive,ranks=128,axis=model.embed.band_factor:2+4/train.num_steps:3000')
  assert [sweep.point_name(point) for point in both] == [
      'adaptive_rank128_band_factor2.0_num_steps3000', 'adaptive_rank128_num_steps3000']
  points = sweep.make_points(rank_sweep.get_config(''), both)
  assert points[0].config.model.embed.band_factor == 2.0
  assert points[0].config.train.num_steps == 3000
  for bad, message in (('axis=train.lrr:1', "'train.lrr' is not a config field"),
                       ('lrs=fast', "'fast' is not a float"),
                       ('axis=model.embed.band_cutoffs:1', r'expected FIELD:V1\+V2')):
    with pytest.raises(ValueError, match=message):
      rank_sweep.get_sweep(bad)


def test_tuned_rows_choose_by_valid_perplexity_never_by_test(tmp_path):
  # dense: 3e-3 best on valid (test says 1.5e-3); svd: the best is at the edge (6e-3).
  for lr, valid, test in ((1.5e-3, 52.0, 40.0), (3e-3, 50.0, 45.0), (6e-3, 55.0, 50.0)):
    name = 'dense' if lr == 3e-3 else f'dense_lr{lr}'
    fake_run(tmp_path, name, 'dense', 16, valid=valid, test=test, lr=lr)
  for lr, valid in ((1.5e-3, 90.0), (3e-3, 80.0), (6e-3, 70.0)):
    name = 'svd_rank8' if lr == 3e-3 else f'svd_rank8_lr{lr}'
    fake_run(tmp_path, name, 'svd', 8, valid=valid, test=valid + 5, lr=lr)
  report = sweep_report.write_reports(tmp_path)
  rows = list(csv.DictReader((tmp_path / 'summary.csv').read_text().splitlines()))
  assert [(r['run'], r['lr']) for r in rows][:2] == [('dense', '0.003'),
                                                      ('dense_lr0.0015', '0.0015')]
  chosen = sweep_table.tuned(sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]))
  assert [(r.kind, r.lr, r.at_edge, r.test_ppl_mean) for r in chosen.itertuples()] == [
      ('dense', 3e-3, False, 45.0), ('svd', 6e-3, True, 75.0)]
  assert '| dense | tied | - | 0.003 | 0.0015+0.003+0.006 |  | 50.00 | 45.00 |' in report
  assert (tmp_path / sweep_report.TUNING_PNG_FILE).read_bytes()[:4] == b'\x89PNG'
  # The plots and the by-vocab-params table show the grid's own rate (the most common).
  by_params = report.split('By vocabulary parameters')[1].split('By vocabulary bytes')[0]
  assert by_params.count('| dense |') == 1 and '| 80.00 |' not in by_params


def test_the_tuning_plot_draws_each_curve_at_its_tuned_rows_other_swept_fields(tmp_path):
  # dense at three rates (1,500 steps) and at 3e-3 for 3,000 steps: the longer run is on
  # no learning-rate curve.
  from factorized.analysis import plots

  for lr, valid in ((1.5e-3, 52.0), (3e-3, 50.0), (6e-3, 55.0)):
    fake_run(tmp_path, f'dense_lr{lr}', 'dense', 16, valid=valid, lr=lr)
  fake_run(tmp_path, 'dense_num_steps3000', 'dense', 16, valid=40.0, num_steps=3000)
  figure = plots.plot_tuning(sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]))
  ax = figure.axes[0]
  curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
  assert {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in curves} == {
      ((1.5e-3, 3e-3, 6e-3), (52.0, 50.0, 55.0))}
  assert ax.get_legend_handles_labels()[1] == ['dense']


def test_a_sweep_with_no_finished_point_has_an_empty_table_and_reports(tmp_path):
  assert list(sweep_table.rows_table([]).columns) == [*sweep_table.COLUMNS, 'series']
  assert sweep_report.write_reports(tmp_path).startswith('Mean ± standard deviation')
  assert (tmp_path / sweep_table.CSV_FILE).read_text().startswith(
      'run,kind,head,rank,shape,head_kind')


def test_tuned_rows_compare_the_values_on_the_seeds_they_share(tmp_path):
  # 3e-3 has three seeds (mean valid 50) but seed 0 at 62; 1.5e-3 has seed 0 only, at 60:
  # on the seed both have, 1.5e-3 is better, though 3e-3's three-seed mean is lower.
  for seed, valid in ((0, 62.0), (1, 44.0), (2, 44.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, valid=valid, test=45.0, lr=3e-3,
             seed=seed)
  fake_run(tmp_path, 'dense_lr0.0015_seed0', 'dense', 16, valid=60.0, test=47.0, lr=1.5e-3)
  chosen = sweep_table.tuned(sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]))
  assert [(r.lr, r.seeds, r.test_ppl_mean) for r in chosen.itertuples()] == [(1.5e-3, 1, 47.0)]
  # With seeds 1 and 2 at 1.5e-3 too (all three shared), the three-seed means decide.
  for seed in (1, 2):
    fake_run(tmp_path, f'dense_lr0.0015_seed{seed}', 'dense', 16, valid=60.0, test=47.0,
             lr=1.5e-3, seed=seed)
  chosen = sweep_table.tuned(sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0]))
  assert [(r.lr, r.seeds) for r in chosen.itertuples()] == [(3e-3, 3)]


def test_a_row_carries_the_bytes_its_vocabulary_tables_take_as_stored(tmp_path):
  fake_run(tmp_path, 'dense', 'dense', 0)
  fake_run(tmp_path, 'svd_rank4', 'svd', 4)
  quantized = json.loads((tmp_path / 'svd_rank4' / 'summary.json').read_text())
  quantized['bytes'] = {'embedding': 2345, 'output_head': 0, 'vocab': 2345}  # e.g. int4
  (tmp_path / 'svd_rank4' / 'summary.json').write_text(json.dumps(quantized))
  rows = {row['run']: row for row in sweep_table.collect_rows(tmp_path)[0]}
  assert rows['dense']['vocab_bytes'] == 4 * rows['dense']['vocab_params']  # float32
  assert rows['svd_rank4']['vocab_bytes'] == 2345


def quant_runs(root, bands=None):
  """dense and svd 8 in float32, and svd 8 trained with int8 tables (model.embed.quant_bits
  swept: a column); `bands`: each run's test_bands, by run name."""
  bands = bands or {}
  fake_run(root, 'dense', 'dense', 16, valid=40.0, test=45.0, bands=bands.get('dense'))
  fake_run(root, 'svd_rank8', 'svd', 8, valid=70.0, test=75.0, bands=bands.get('svd_rank8'))
  fake_run(root, 'svd_rank8_quant_bits8', 'svd', 8, valid=69.0, test=74.0,
           bands=bands.get('svd_rank8_quant_bits8'))
  for run, bits in (('dense', 0), ('svd_rank8', 0), ('svd_rank8_quant_bits8', 8)):
    summary = json.loads((root / run / 'summary.json').read_text())
    summary['config']['model']['embed']['quant_bits'] = bits
    if bits:
      summary['bytes'] = {'embedding': 8600, 'output_head': 0, 'vocab': 8600}
    (root / run / 'summary.json').write_text(json.dumps(summary))


def quant_sweep(root):
  """quant_runs, and dense quantized after training to int8 and int4 (posthoc_quant)."""
  quant_runs(root)
  quantized = {'8': {'embedding': 66000, 'output_head': 0, 'vocab': 66000},
               '4': {'embedding': 34000, 'output_head': 0, 'vocab': 34000}}
  for split, ppl in (('valid', {'8': 41.0, '4': 60.0}), ('test', {'8': 46.0, '4': 65.0})):
    result = {'method': 'posthoc_quant', 'split': split, 'step': 1500, 'group': 0,
              'trained_quant_bits': 0, 'ppl_by_bits': ppl, 'bytes_by_bits': quantized}
    (root / 'dense' / f'posthoc_quant_{split}.json').write_text(json.dumps(result))


def test_a_post_training_quantization_is_a_row_per_width_beside_its_run(tmp_path):
  quant_sweep(tmp_path)
  rows = sweep_table.collect_rows(tmp_path)[0]
  assert [(r['run'], r['kind'], r['method'], r['quant_bits']) for r in rows] == [
      ('dense', 'dense', 'trained', 0), ('dense', 'dense', 'posthoc_quant', 8),
      ('dense', 'dense', 'posthoc_quant', 4), ('svd_rank8', 'svd', 'trained', 0),
      ('svd_rank8_quant_bits8', 'svd', 'trained', 8)]
  dense, int8, int4 = rows[:3]
  assert (int8['vocab_bytes'], int4['vocab_bytes']) == (66000, 34000)
  assert int8['vocab_params'] == int4['vocab_params'] == dense['vocab_params'] == 64000
  assert (int8['valid_ppl'], int8['best_valid_ppl'], int8['test_ppl']) == (41.0, 41.0, 46.0)
  assert int4['steps'] == dense['steps'] == 1500 and int4['seed'] == 0
  table = sweep_table.rows_table(rows)
  assert list(table['series'])[:3] == ['dense', 'dense_posthoc_int8', 'dense_posthoc_int4']
  # The grid's own rows (the by-params table, the headline) are the float32 trained ones.
  assert list(sweep_table.base_rows(table)['run']) == ['dense', 'dense', 'dense', 'svd_rank8']
  headline = sweep_report.plots.headline_rows(table)
  assert list(zip(headline['kind'], headline['method'], strict=True)) == [
      ('dense', 'trained'), ('svd', 'trained')]


def test_the_bytes_front_keeps_exactly_the_undominated_rows_of_every_precision(tmp_path):
  quant_sweep(tmp_path)
  report = sweep_report.write_reports(tmp_path)
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  points = sweep_table.bytes_rows(table)
  assert sorted(points['vocab_bytes']) == [8600, 34000, 34080, 66000, 256000]
  front = sweep_table.pareto_front(points, 'vocab_bytes', 'test_ppl_mean')
  # svd 8 in float32 (34,080 bytes, 75) is beaten by dense int4 (34,000, 65): off the front.
  assert list(zip(front['vocab_bytes'], front['test_ppl_mean'], strict=True)) == [
      (8600, 74.0), (34000, 65.0), (66000, 46.0), (256000, 45.0)]
  by_bytes = report.split('By vocabulary bytes')[1].split('Every run:')[0]
  assert '| 8,600 | svd | tied | 8 | int8 QAT | 74.00 | yes |' in by_bytes
  assert '| 34,000 | dense | tied | - | int4 post-training | 65.00 | yes |' in by_bytes
  assert '| 34,080 | svd | tied | 8 | float32 | 75.00 |  |' in by_bytes
  per_run = list(csv.DictReader((tmp_path / 'summary.csv').open()))
  assert list(per_run[0])[:len(sweep_table.COLUMNS)] == list(sweep_table.COLUMNS)
  assert [(r['method'], r['quant_bits'], r['vocab_bytes']) for r in per_run[:3]] == [
      ('trained', '0', '256000'), ('posthoc_quant', '8', '66000'),
      ('posthoc_quant', '4', '34000')]
  assert (tmp_path / sweep_report.BYTES_PNG_FILE).read_bytes()[:4] == b'\x89PNG'


def test_a_kinds_size_fields_are_part_of_a_points_identity_not_a_grid_setting(tmp_path):
  # dpq at K = 16 with 8 groups (the default) and with 32: two points, not two seeds of one,
  # and dpq_groups is no swept column (it would make every other point's value 8 the grid's).
  fake_run(tmp_path, 'dense', 'dense', 16)
  fake_run(tmp_path, 'dpq_rank16', 'dpq', 16, valid=70.0, test=75.0)
  fake_run(tmp_path, 'dpq_rank16_groups32', 'dpq', 16, valid=60.0, test=65.0)
  for run, groups in (('dense', 8), ('dpq_rank16', 8), ('dpq_rank16_groups32', 32)):
    summary = json.loads((tmp_path / run / 'summary.json').read_text())
    summary['config']['model']['embed']['dpq_groups'] = groups
    (tmp_path / run / 'summary.json').write_text(json.dumps(summary))
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  assert list(table['shape']) == ['', '', 'dpq_groups=32']
  assert 'dpq_groups' not in sweep_table.swept_columns(table)
  groups = sweep_table.aggregate(table)
  assert list(zip(groups['kind'], groups['shape'], groups['seeds'], strict=True)) == [
      ('dense', '', 1), ('dpq', '', 1), ('dpq', 'dpq_groups=32', 1)]
  assert [comparison.point_label(row) for _, row in groups.iterrows()] == [
      'dense', 'dpq 16', 'dpq 16 (dpq_groups=32)']
  assert sweep_table.shape({'kind': 'tt', 'tt_vocab_factors': (30, 30, 30),
                            'tt_dim_factors': ()}) == 'tt_vocab_factors=30+30+30'


def test_a_field_added_after_a_run_was_saved_is_swept_where_a_newer_run_moved_it(tmp_path):
  # dense saved before model.embed.quant_bits existed (no such field: it computed float32)
  # and dense trained int4: two points, the old one at quant_bits 0, not two seed-0 runs.
  fake_run(tmp_path, 'dense', 'dense', 16, valid=40.0, test=45.0)
  fake_run(tmp_path, 'dense_quant_bits4', 'dense', 16, valid=42.0, test=47.0)
  summary = json.loads((tmp_path / 'dense_quant_bits4' / 'summary.json').read_text())
  summary['config']['model']['embed']['quant_bits'] = 4
  (tmp_path / 'dense_quant_bits4' / 'summary.json').write_text(json.dumps(summary))
  assert 'quant_bits' not in json.loads((tmp_path / 'dense' / 'summary.json').read_text())[
      'config']['model']['embed']
  table = sweep_table.rows_table(sweep_table.collect_rows(tmp_path)[0])
  assert list(zip(table['run'], table['quant_bits'], strict=True)) == [
      ('dense', 0), ('dense_quant_bits4', 4)]
  groups = sweep_table.aggregate(table)
  assert list(groups['seeds']) == [1, 1]
