"""A sweep directory served by `tensorboard --logdir` (127.0.0.1, ephemeral port) over HTTP."""

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from configs import rank_sweep
from factorized.analysis import report as sweep_report
from factorized.analysis import table as sweep_table
from factorized.sweeps import sweep
from factorized.train import trainer

METRICS = ('hparams/valid_ppl', 'hparams/test_ppl')


def start_tensorboard(logdir, timeout=90.0):
  """Starts tensorboard on 127.0.0.1:0; returns the process and its base URL."""
  proc = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', '--logdir', str(logdir), '--host',
       '127.0.0.1', '--port', '0', '--load_fast', 'false', '--reload_interval', '1'],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = queue.Queue()
  # A reader thread keeps draining the pipe, so the server never blocks on its output.
  threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                   daemon=True).start()
  seen, deadline = [], time.time() + timeout
  while time.time() < deadline:
    try:
      line = lines.get(timeout=max(0.1, deadline - time.time()))
    except queue.Empty:
      break
    if line is None:
      break
    seen.append(line)
    found = re.search(r'TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/? ', line)
    if found:  # the port is only known from this startup line
      return proc, found.group(1)
  proc.kill()
  raise AssertionError('tensorboard did not start serving:\n' + ''.join(seen)[-3000:])


def fetch(url, body=None, form=None):
  """GET (or POST a JSON body / a form) and decode the JSON answer."""
  if body is not None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={'Content-Type': 'application/json'})
  elif form is not None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form, doseq=True).encode())
  else:
    request = urllib.request.Request(url)
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.loads(response.read())


def poll(get, ready, timeout=90.0):
  """Calls `get` until `ready(answer)` (the first load is asynchronous)."""
  deadline, answer = time.time() + timeout, None
  while time.time() < deadline:
    answer = get()
    if ready(answer):
      return answer
    time.sleep(0.5)
  raise AssertionError(f'tensorboard never served the expected data; last answer: {answer}')


@pytest.fixture
def sweep_dir(tiny_config, tmp_path):
  """Two tiny points (dense, svd_rank4) trained in-process, then the sweep's reports."""
  tiny_config.train.update(num_steps=4, warmup_steps=1, eval_every=4, ckpt_every=4,
                           log_every=2)
  root = tmp_path / 'sweep'
  summaries = {}
  for point in sweep.make_points(tiny_config,
                                 rank_sweep.get_sweep('runlocal,kinds=dense+svd,ranks=4')):
    summaries[point.name] = trainer.train_and_evaluate(point.config, str(root / point.name))
  sweep_report.write_reports(root)
  return root, summaries


def test_tensorboard_serves_every_run_its_hparams_metrics_and_ppl_vs_rank(sweep_dir):
  root, summaries = sweep_dir
  proc, url = start_tensorboard(root)
  try:
    expected_runs = {*summaries, sweep_table.SWEEP_RUN}
    runs = poll(lambda: fetch(f'{url}/data/runs'), lambda r: expected_runs <= set(r))
    assert set(runs) == expected_runs
    assert fetch(f'{url}/data/plugins_listing')['hparams']['enabled']

    experiment = fetch(f'{url}/data/plugin/hparams/experiment', body={'experimentName': ''})
    assert {'kind', 'rank', 'head', 'embedding_params', 'vocab_params', 'total_params'} <= {
        h['name'] for h in experiment['hparamInfos']}
    # Parameter counts: a readable table in each run's text summary, not step-0 scalars.
    assert fetch(f'{url}/data/plugin/text/tags')['svd_rank4'] == ['params/text_summary']
    query = urllib.parse.urlencode({'run': 'svd_rank4', 'tag': 'params/text_summary'})
    (table,) = fetch(f'{url}/data/plugin/text/text?{query}')
    vocab = summaries['svd_rank4']['params']['vocab']
    assert '<td>vocab</td>' in table['text'] and f'{vocab:,}' in table['text']
    assert not any(tag.startswith('params/')
                   for tag in fetch(f'{url}/data/plugin/scalars/tags')['svd_rank4'])
    assert set(METRICS) <= {m['name']['tag'] for m in experiment['metricInfos']}

    request = {
        'experimentName': '',
        'allowedStatuses': ['STATUS_SUCCESS', 'STATUS_UNKNOWN', 'STATUS_FAILURE',
                            'STATUS_RUNNING'],
        'colParams': [{'hparam': 'kind'}, {'hparam': 'rank'},
                      *({'metric': {'tag': tag, 'group': ''}} for tag in METRICS)],
        'startIndex': 0, 'sliceSize': 100}
    groups = poll(lambda: fetch(f'{url}/data/plugin/hparams/session_groups', body=request),
                  lambda g: len(g.get('sessionGroups', [])) == len(summaries))['sessionGroups']
    for group in groups:
      summary = summaries[group['name']]
      embed = summary['config']['model']['embed']
      assert group['hparams']['kind'] == embed['kind']
      assert group['hparams']['rank'] == (0 if embed['kind'] == 'dense' else embed['rank'])
      metrics = {m['name']['tag']: m['value'] for m in group['metricValues']}
      assert metrics['hparams/valid_ppl'] == pytest.approx(summary['valid_ppl'], rel=1e-6)
      assert metrics['hparams/test_ppl'] == pytest.approx(summary['test_ppl'], rel=1e-6)

    tags = fetch(f'{url}/data/plugin/scalars/tags')[sweep_table.SWEEP_RUN]
    assert {'ppl_vs_rank/svd', 'valid_ppl_vs_rank/svd', 'ppl_vs_vocab_params/svd',
            'ppl_vs_rank/dense', 'ppl_vs_vocab_params/dense'} <= set(tags)
    query = urllib.parse.urlencode({'run': sweep_table.SWEEP_RUN, 'tag': 'ppl_vs_rank/svd'})
    ((_, step, value),) = fetch(f'{url}/data/plugin/scalars/scalars?{query}')
    assert step == 4
    assert value == pytest.approx(summaries['svd_rank4']['test_ppl'], rel=1e-6)
    by_run = fetch(f'{url}/data/plugin/scalars/scalars_multirun',
                   form={'tag': 'hparams/test_ppl', 'runs': sorted(summaries)})
    assert set(by_run) == set(summaries)
  finally:
    proc.terminate()
    proc.wait(timeout=30)
