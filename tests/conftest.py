"""Test set-up: 8 fake CPU devices, set before JAX is first imported."""

import os

# XLA's LLVM back end at -O0: compiling the tests' many tiny programs is most of the
# suite's CPU time, and -O0 halves it (a one-row benchmark run: 19 s -> 10 s of CPU).
# Optimisation levels do not change float semantics (no fast-math either way), and every
# comparison the suite makes is between programs compiled alike; the subprocesses inherit it.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = ' '.join((os.environ.get('XLA_FLAGS', ''), TEST_XLA_FLAGS,
                                    '--xla_force_host_platform_device_count=8')).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent XLA compilation cache for the test session and the train.py/eval.py
# processes it starts (they inherit the environment): the many tiny runs compile the same
# programs again and again. A cache hit is the same executable, so nothing computed changes.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.pytest_cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# Tests never reach the Hugging Face hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import json  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def brown_zip() -> pathlib.Path:
  """The real Brown corpus file, from $FACTORIZED_DATA_DIR (skips when absent)."""
  data_dir = os.environ.get('FACTORIZED_DATA_DIR')
  if not data_dir or not (pathlib.Path(data_dir) / 'brown.zip').exists():
    pytest.skip('needs brown.zip in $FACTORIZED_DATA_DIR (CI sets ../shared/data)')
  return pathlib.Path(data_dir) / 'brown.zip'


@pytest.fixture
def text_config(tmp_path):
  """The data config of a generated corpus: random sentences over 40 Zipf-ish words."""
  from configs import brown
  from factorized.data import pipeline as data

  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(40)]
  probs = 1.0 / np.arange(1, 41)
  for split, num_lines in (('train', 120), ('valid', 30), ('test', 20)):
    lines = [' '.join(rng.choice(words, size=rng.integers(1, 9), p=probs / probs.sum()))
             for _ in range(num_lines)]
    (tmp_path / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  config = brown.get_config('runlocal').data
  config.update(corpus='text', vocab_size=0, min_freq=2, seq_len=8,
                cache_dir=str(tmp_path / 'cache'),
                **{f'{s}_files': str(tmp_path / f'{s}.txt') for s in data.SPLITS})
  return config


@pytest.fixture
def tiny_config(text_config):
  """A whole runlocal config on the generated corpus: trains in a second or two."""
  from configs import brown

  config = brown.get_config('runlocal')
  config.data = text_config
  config.model.embed.rank = 8
  config.model.model_dim = 16
  config.model.mlp_dim = 32
  config.train.update(num_steps=12, batch_size=8, eval_batch_size=8, warmup_steps=2,
                      eval_every=6, ckpt_every=4, log_every=2)
  return config


def tiny_runlocal_config(root, kind):
  """tiny_config's sizes on the generated corpus, written into `root` (for session-scoped
  fixtures: tiny_config is function-scoped)."""
  from configs import brown

  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(40)]
  probs = 1.0 / np.arange(1, 41)
  for split, num_lines in (('train', 120), ('valid', 30), ('test', 20)):
    path = root / f'{split}.txt'
    if not path.exists():
      lines = [' '.join(rng.choice(words, size=rng.integers(1, 9), p=probs / probs.sum()))
               for _ in range(num_lines)]
      path.write_text('\n'.join(lines) + '\n')
  config = brown.get_config(f'runlocal,kind={kind}')
  config.data.update(corpus='text', vocab_size=0, min_freq=2, seq_len=8,
                     cache_dir=str(root / 'cache'),
                     **{f'{s}_files': str(root / f'{s}.txt') for s in ('train', 'valid', 'test')})
  config.model.update(model_dim=16, mlp_dim=32)
  config.model.embed.rank = 8
  config.train.update(num_steps=12, batch_size=8, eval_batch_size=8, warmup_steps=2,
                      eval_every=6, ckpt_every=4, log_every=2)
  return config


@pytest.fixture(scope='session')
def runs(tmp_path_factory):
  """A tiny dense run in <root>/sweep/dense, and every scalar it wrote (the factorized
  kinds are read in test_notebooks.py, from a runlocal sweep)."""
  import jax
  import pandas as pd

  from factorized.config import build
  from factorized.runtime import parallel
  from factorized.train import metric_writer, trainer

  root = tmp_path_factory.mktemp('runs')
  written = []
  original = metric_writer.MetricWriter.scalars

  def recording(self, step, values):
    written.extend((self._writer.logdir, tag, int(step), float(v)) for tag, v in values.items())
    return original(self, step, values)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(metric_writer.MetricWriter, 'scalars', recording)
    summary = trainer.train_and_evaluate(  # one device compiles fastest
        build.from_config(tiny_runlocal_config(root, 'dense')), str(root / 'sweep' / 'dense'),
        mesh=parallel.make_mesh(jax.devices()[:1]))
  return root / 'sweep', summary, pd.DataFrame(written, columns=['logdir', 'tag', 'step', 'value'])


@pytest.fixture(scope='session')
def dense_embedding(runs):
  """The tiny dense run's trained embedding (readers.load_embedding)."""
  from factorized.analysis import readers

  sweep, _, _ = runs
  return readers.load_embedding(sweep / 'dense')


SUMMARY_CSV = """\
run,kind,head,rank,seed,embedding_params,vocab_params,total_params,valid_ppl,best_valid_ppl,test_ppl,tokens_per_s
dense,dense,tied,,0,1000,1000,2000,50.0,50.0,52.0,1000.0
albert_rank4,albert,tied,4,0,320,400,1400,65.0,65.0,66.0,
svd_rank4,svd,tied,4,0,300,300,1300,70.0,70.0,72.0,
svd_rank8,svd,tied,8,0,600,600,1600,60.0,60.0,61.0,
svd_rank4_untied,svd,untied,4,0,300,1300,2300,68.0,68.0,69.0,
dense,posthoc_svd,tied,4,0,300,300,1300,,,90.0,
dense,posthoc_svd,tied,8,0,600,600,1600,,,70.0,
dense,posthoc_svd_ft10,tied,4,0,300,300,1300,,,80.0,
dense,posthoc_svd_ft10,tied,8,0,600,600,1600,,,65.0,
dense,posthoc_svd_freq,tied,4,0,300,300,1300,,,85.0,
"""


@pytest.fixture
def fake_sweep(tmp_path):
  """A sweep directory as sweep_report and eval.py --svd_ranks=4,8 leave it (numbers made up)."""
  (tmp_path / 'summary.csv').write_text(SUMMARY_CSV)
  (tmp_path / 'dense').mkdir()
  record = {'split': 'test', 'dense_ppl': 52.5, 'ppl_by_rank': {'8': 70.0, '4': 90.0},
            'finetune_steps': 10, 'finetuned_ppl_by_rank': {'8': 65.0, '4': 80.0}}
  (tmp_path / 'dense' / 'posthoc_svd_test.json').write_text(json.dumps(record))
  record = {'method': 'posthoc_svd_freq', 'split': 'test', 'dense_ppl': 52.5,
            'ppl_by_rank': {'4': 85.0}}
  (tmp_path / 'dense' / 'posthoc_svd_freq_test.json').write_text(json.dumps(record))
  return tmp_path
