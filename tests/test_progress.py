"""The runs' progress files and the sweep's live view of them."""

import io
import re

from factorized.sweeps.progress import SweepProgress
from factorized.train import progress


def two_points(tmp_path):
  points = {name: (tmp_path / name, 100) for name in ('dense', 'svd_rank8')}
  for workdir, _ in points.values():
    workdir.mkdir()
  return points


def test_off_a_terminal_the_sweep_prints_lines_with_steps_and_an_eta(tmp_path):
  points = two_points(tmp_path)
  out = io.StringIO()
  view = SweepProgress(points, every_s=0, stream=out, terminal=False)
  view.update(['dense'])  # no progress.json yet
  assert 'dense starting' in out.getvalue() and 'ETA ?' in out.getvalue()
  progress.write_progress(tmp_path / 'dense', step=50, num_steps=100, loss=4.25,
                          steps_per_s=10.0, tokens_per_s=40960.0)
  view.update(['dense'])
  line = out.getvalue().splitlines()[-1]
  # 150 steps left (50 of dense, 100 of the queued svd point) at 10 steps/s: 15 s.
  assert line.startswith('sweep: 0/2 points, 50/200 steps (25%), elapsed 0:00:0')
  assert line.endswith('ETA 0:00:15 | dense 50/100 loss 4.250 40,960 tok/s')
  view.update(['svd_rank8'], ended=['dense'])
  assert re.search(r'sweep: 1/2 points, 100/200 steps \(50%\).*\| svd_rank8 starting$',
                   out.getvalue().splitlines()[-1])
  view.close()


def test_off_a_terminal_lines_come_at_most_every_interval(tmp_path):
  out = io.StringIO()
  view = SweepProgress(two_points(tmp_path), every_s=3600, stream=out, terminal=False)
  for _ in range(5):
    view.update(['dense'])
  assert out.getvalue() == ''
  view.echo('dense: finished')  # results always print
  assert out.getvalue() == 'dense: finished\n'


def test_on_a_terminal_each_running_point_has_a_bar_under_the_sweeps(tmp_path):
  points = two_points(tmp_path)
  out = io.StringIO()
  view = SweepProgress(points, stream=out, terminal=True)
  progress.write_progress(tmp_path / 'svd_rank8', step=30, num_steps=100, loss=5.5,
                          steps_per_s=5.0, tokens_per_s=20480.0)
  view.update(['svd_rank8'])
  view.echo('dense: finished in 12s')
  view.close()
  text = out.getvalue()
  assert 'sweep' in text and 'ETA 0:00:34' in text  # 170 steps at 5 steps/s
  assert 'svd_rank8' in text and '30/100' in text and 'loss 5.500, 20,480 tok/s' in text
  assert 'dense: finished in 12s' in text


def test_progress_json_is_what_the_trainer_wrote(tmp_path):
  assert progress.read_progress(tmp_path) is None
  progress.write_progress(tmp_path, step=3, num_steps=9, loss=1.5, steps_per_s=2.0,
                          tokens_per_s=8.0)
  info = progress.read_progress(tmp_path)
  assert {k: info[k] for k in ('step', 'num_steps', 'loss', 'steps_per_s')} == {
      'step': 3, 'num_steps': 9, 'loss': 1.5, 'steps_per_s': 2.0}
