"""notebooks/: committed without outputs, and each runs top to bottom on a runlocal sweep."""

import os
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from factorized.analysis import readers
from factorized.embeddings import spectrum

NOTEBOOKS = ('rank_analysis', 'embedding_svd')


def notebook_path(repo_root, name):
  return repo_root / 'notebooks' / f'{name}.ipynb'


def single_device_env(**extra) -> dict:
  """This environment without conftest's 8 fake devices (one device compiles fastest)."""
  env = {**os.environ, **extra}
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
      '--xla_force_host_platform_device_count=8', '').strip()
  return env


def run(command, repo_root, env):
  done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True)
  assert done.returncode == 0, f'{" ".join(command)} failed:\n{done.stdout[-3000:]}' \
                               f'\n{done.stderr[-3000:]}'


@pytest.fixture(scope='module')
def sweep_dir(brown_zip, repo_root, tmp_path_factory):
  """The runlocal rank sweep shrunk to dense, albert and svd at rank 8 (20 steps each), and
  the post-hoc SVD of its dense point: the README's commands, made once for both notebooks."""
  sweep = tmp_path_factory.mktemp('notebooks') / 'sweep'
  env = single_device_env(FACTORIZED_DATA_DIR=str(brown_zip.parent))
  run([sys.executable, 'train.py', '--config=configs/rank_sweep.py:runlocal,ranks=8',
       f'--workdir={sweep}', '--config.train.num_steps=20', '--sweep_workers=2'], repo_root, env)
  run([sys.executable, 'eval.py', f'--workdir={sweep / "dense"}', '--svd_ranks=4,8'],
      repo_root, env)
  return sweep


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebooks_carry_no_outputs(repo_root, name):
  nb = nbformat.read(notebook_path(repo_root, name), as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == 'python3'
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
  first_code = next(cell for cell in nb.cells if cell.cell_type == 'code')
  assert "os.environ.get('FACTORIZED_SWEEP_DIR', 'runs/sweep')" in first_code.source
  assert first_code.metadata.get('tags') == ['parameters']


def test_notebooks_directory_holds_only_the_tested_notebooks(repo_root):
  found = sorted(p.stem for p in (repo_root / 'notebooks').glob('*.ipynb'))
  assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_top_to_bottom_on_a_sweep(name, sweep_dir, repo_root, monkeypatch,
                                                tmp_path):
  # The kernel inherits this environment. The inline backend is not interactive either (as
  # Agg), and it turns every figure into a PNG output that the test can count.
  monkeypatch.setenv('FACTORIZED_SWEEP_DIR', str(sweep_dir))
  # Only the sweep directory: no corpus to read or rebuild (a colleague's copied results).
  for variable in ('FACTORIZED_DATA_DIR', 'FACTORIZED_CACHE_DIR'):
    (tmp_path / variable).mkdir()
    monkeypatch.setenv(variable, str(tmp_path / variable))
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  monkeypatch.setenv('XLA_FLAGS', single_device_env()['XLA_FLAGS'])
  nb = nbformat.read(notebook_path(repo_root, name), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(repo_root)}}).execute()
  code = [cell for cell in nb.cells if cell.cell_type == 'code']
  text = '\n'.join(out.get('text', '') for cell in code for out in cell.outputs)
  assert f'sweep directory: {sweep_dir}' in text
  assert 'Traceback' not in text and 'No post-hoc SVD' not in text
  for cell in code:
    kinds = {key for out in cell.outputs for key in out.get('data', {})}
    if 'plots.plot_' in cell.source:
      assert 'image/png' in kinds, cell.source


def test_the_helpers_agree_with_the_sweep_files(sweep_dir):
  """What the notebooks show from a real sweep: summary.csv against the events, and the
  spectra of the factorized kinds (computed from factors) against their explicit tables."""
  table = readers.load_sweep_table(sweep_dir)
  trained = readers.trained_points(table).set_index('run')
  assert sorted(trained.index) == ['albert_rank8', 'dense', 'svd_rank8']
  events = readers.final_scalars(readers.load_scalars(sweep_dir),
                                  ['valid/ppl', 'test/ppl', 'spectrum/stable_rank'])
  for column in ('valid_ppl', 'test_ppl'):
    np.testing.assert_allclose(events.loc[trained.index, column.replace('_', '/')],
                               trained[column], rtol=1e-6)
  posthoc = readers.load_posthoc_svd(sweep_dir)
  rows = table[table['kind'] == 'posthoc_svd']
  assert list(posthoc['rank']) == list(rows['rank']) == [4, 8]
  np.testing.assert_allclose(posthoc['ppl'], rows['test_ppl'])
  for run, inner in (('svd_rank8', 8), ('albert_rank8', 9)):  # albert: [A 1], [P; b]
    embedding = readers.load_embedding(sweep_dir / run)
    vocab, dim = embedding.vocab_size, embedding.model_dim
    assert [f.shape for f in embedding.factors] == [(vocab, inner), (inner, dim)]
    sv = embedding.singular_values()
    explicit = np.linalg.svd(np.linalg.multi_dot(embedding.factors), compute_uv=False)
    np.testing.assert_allclose(sv, explicit[:sv.size], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(embedding.svd[1], explicit[:sv.size], rtol=1e-8)
    np.testing.assert_allclose(spectrum.stable_rank(sv),
                               events.loc[run, 'spectrum/stable_rank'], rtol=1e-4)
