"""The workdir's saved config: resume, refusal of a different config, overwrite moves aside."""

import json

import pytest

from configs import brown
from factorized import files
from factorized.config import build
from factorized.train import workdir as workdir_lib


def test_first_start_writes_config_then_resumes(tmp_path):
  config = build.from_config(brown.get_config('runlocal'))
  assert workdir_lib.prepare_workdir(tmp_path, config) is False
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['model']['embed']['kind'] == 'dense'
  assert workdir_lib.prepare_workdir(tmp_path, config) is True
  assert build.load_saved(tmp_path) == config


def test_different_config_is_refused_and_names_the_field(tmp_path):
  workdir_lib.prepare_workdir(tmp_path, build.from_config(brown.get_config('runlocal')))
  (tmp_path / 'keep.txt').write_text('earlier output')
  other = build.from_config(brown.get_config('runlocal,kind=svd'))
  with pytest.raises(ValueError, match=r"(?s)model\.embed\.kind: 'dense' -> 'svd'.*overwrite"):
    workdir_lib.prepare_workdir(tmp_path, other)
  assert (tmp_path / 'keep.txt').read_text() == 'earlier output'


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
  workdir_lib.prepare_workdir(tmp_path, build.from_config(brown.get_config('runlocal')))
  (tmp_path / 'keep.txt').write_text('earlier output')
  other = build.from_config(brown.get_config('runlocal,kind=svd')).replace(overwrite=True)
  assert workdir_lib.prepare_workdir(tmp_path, other) is False
  archived = list(tmp_path.glob('overwritten-*/keep.txt'))
  assert [p.read_text() for p in archived] == ['earlier output']
  assert build.load_saved(tmp_path).model.embed.kind == 'svd'


def test_load_saved_of_a_non_workdir_says_how_to_make_one(tmp_path):
  with pytest.raises(FileNotFoundError, match='train.py --workdir'):
    build.load_saved(tmp_path)


def test_write_json_atomic_leaves_no_temporary_files(tmp_path):
  files.write_json_atomic(tmp_path / 'a.json', {'x': 1})
  files.write_json_atomic(tmp_path / 'a.json', {'x': 2})
  assert json.loads((tmp_path / 'a.json').read_text()) == {'x': 2}
  assert [p.name for p in tmp_path.iterdir()] == ['a.json']
