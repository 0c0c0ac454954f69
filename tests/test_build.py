"""factorized/config/build.py: a run's Spec becomes typed arguments once, each dataclass
validating its own fields once, whether the run trains or a saved run is evaluated."""

import collections

import pytest

from configs import brown
from factorized.config import build
from factorized.evaluation import saved as eval_run
from factorized.model.transformer import ModelArgs
from factorized.train import trainer


def spied(monkeypatch) -> collections.Counter:
  """How often the run's arguments are built and each dataclass validated, from here on
  (the Spec sections' cache emptied: as in a fresh process)."""
  calls = collections.Counter()
  build._sections.cache_clear()

  def spy(name, owner, attribute):
    original = getattr(owner, attribute)

    def counted(*args, **kwargs):
      calls[name] += 1
      return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, counted)

  spy('build_args', trainer, 'build_args')
  for cls in (build.DataArgs, build.TrainArgs, build.EvalArgs):
    spy(cls.__name__, cls, 'validate')
  original_from_config = ModelArgs.from_config.__func__
  monkeypatch.setattr(ModelArgs, 'from_config', classmethod(
      lambda cls, *args: calls.update(['ModelArgs']) or original_from_config(cls, *args)))
  return calls


ONCE = {'build_args': 1, 'DataArgs': 1, 'TrainArgs': 1, 'EvalArgs': 1, 'ModelArgs': 1}


def test_a_training_run_builds_and_validates_its_arguments_once(tiny_config, tmp_path,
                                                                monkeypatch):
  """As train.py runs: the Spec at start-up, then the run."""
  calls = spied(monkeypatch)
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  assert dict(calls) == ONCE


def test_evaluating_a_saved_run_builds_and_validates_its_arguments_once(tiny_config, tmp_path,
                                                                        monkeypatch):
  trainer.train_and_evaluate(build.from_config(tiny_config), str(tmp_path))
  calls = spied(monkeypatch)
  eval_run.evaluate_workdir(str(tmp_path), 'valid')
  assert dict(calls) == ONCE


def test_bad_fields_fail_at_start_up_with_their_names():
  config = brown.get_config('runlocal')
  config.train.grad_clip = 0.0
  with pytest.raises(ValueError, match=r'train\.grad_clip=0\.0 must be > 0'):
    build.from_config(config)
  config = brown.get_config('runlocal')
  config.eval.frequent_count = 7
  with pytest.raises(ValueError, match=r'eval\.frequent_count=7 must be one of'):
    build.from_config(config)


def test_the_arguments_are_those_of_the_spec():
  spec = build.from_config(brown.get_config('runlocal,kind=svd,rank=16'))
  args = build.build_args(spec, 300)
  assert args.model == build.model_args(spec, 300)
  assert (args.model.embed.name, args.model.embed.rank) == ('svd', 16)
  assert args.train.lr == spec.train.lr and args.data.seq_len == spec.data.seq_len
  assert args.eval.band_edges == spec.eval.band_edges and args.seed == spec.seed
