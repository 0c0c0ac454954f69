"""Where a config stops: a config file's ConfigDict (or a run's saved config.json) becomes a
frozen, migrated and validated Spec (`from_config`, `load_saved`), and a run's Spec becomes
its typed arguments (`build_args(spec, vocab_size) -> RunArgs`).

Each entry point reads its config file once and calls `from_config` before anything is
built, downloaded or written. A bad field ends there as a ValueError naming it and the fix
(the entry points print it as one line, exit code 2). Configs saved before a field existed
are migrated there (factorized/config/migrate.py), whether they come from a workdir or a
results directory. Sections: `data` (corpus, tokenizer, seq_len), `model` (sizes, `embed`:
the kind and its fields), `train` (optimizer, schedule, batches, checkpoints), `eval`
(bands, classes) and `launcher` (SLURM resources); plus `seed` and `overwrite`.

A run's arguments are frozen dataclasses, each validating its own fields as it is made (a
ValueError naming the field): `DataArgs` (data.*), `TrainArgs` (train.*), `EvalArgs`
(eval.*), and the model's `ModelArgs` (factorized/model/transformer.py, below this layer:
it needs the vocabulary size). `from_config` makes the vocabulary-independent ones at
start-up (`sections`), before any data is read; `build_args` adds the model once the corpus
gives the vocabulary size, reusing them: a Spec's sections are made and validated once per
process. The trainer calls `build_args` once per run and keeps the result on its Run; the
model, the costs, the optimizer, the summary and the evaluators read it, never the Spec.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from typing import Any

from factorized import embeddings
from factorized.config import migrate as migrate_lib
from factorized.data import corpora
from factorized.data import pipeline as data_lib
from factorized.model import transformer as model_lib
from factorized.spec import Spec

SECTIONS = ('data', 'model', 'train', 'eval')
CONFIG_FILE = 'config.json'  # a run's config, saved in its workdir (factorized/train/workdir.py)

# train.embed_decay: which of the embedding table's parameters weight decay applies to
# (factorized/train/optim.py).
EMBED_DECAYS = ('table', 'factors', 'none')


class _Section:
  """The arguments of one config section: a frozen dataclass that validates its fields as it
  is made (`validate`: a ValueError naming the first field out of range)."""

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    raise NotImplementedError

  @classmethod
  def from_section(cls, section: Any):
    """The arguments of a config section (a Spec or a ConfigDict): the fields they declare."""
    return cls(**{field.name: section[field.name] for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class DataArgs(_Section):
  """What the run reads of `data` beyond the corpus itself (the corpus reads its section)."""

  seq_len: int
  tokenizer: str  # word | bpe

  def validate(self) -> None:
    """A ValueError naming data.seq_len unless it is a positive integer."""
    seq_len = self.seq_len
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
      raise ValueError(f'data.seq_len={seq_len!r} must be a positive integer.')


@dataclasses.dataclass(frozen=True)
class TrainArgs(_Section):
  """The optimizer, its schedule, the batches and the checkpoints (train.*)."""

  num_steps: int
  batch_size: int  # global: across all devices and processes
  grad_accum_steps: int
  lr: float
  min_lr_ratio: float
  warmup_steps: int
  weight_decay: float
  grad_clip: float
  b1: float
  b2: float
  embed_decay: str
  eval_every: int
  eval_batch_size: int
  ckpt_every: int
  keep_checkpoints: int
  log_every: int

  def validate(self) -> None:
    """A ValueError naming the first `train.*` field that is out of range."""
    positive = ('num_steps', 'batch_size', 'grad_accum_steps', 'eval_every', 'eval_batch_size',
                'ckpt_every', 'keep_checkpoints', 'log_every')
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'train.{name}={value!r} must be a positive integer.')
    if self.batch_size % self.grad_accum_steps:
      raise ValueError(
          f'train.batch_size={self.batch_size} must be divisible by '
          f'train.grad_accum_steps={self.grad_accum_steps}.')
    if not self.lr > 0:
      raise ValueError(f'train.lr={self.lr} must be > 0.')
    if not 0 <= self.min_lr_ratio <= 1:
      raise ValueError(f'train.min_lr_ratio={self.min_lr_ratio} must be in [0, 1].')
    if not 0 <= self.warmup_steps < self.num_steps:
      raise ValueError(
          f'train.warmup_steps={self.warmup_steps} must be in '
          f'[0, train.num_steps={self.num_steps}).')
    if self.weight_decay < 0:
      raise ValueError(f'train.weight_decay={self.weight_decay} must be >= 0.')
    if not self.grad_clip > 0:
      raise ValueError(f'train.grad_clip={self.grad_clip} must be > 0.')
    if self.embed_decay not in EMBED_DECAYS:
      raise ValueError(f'train.embed_decay={self.embed_decay!r} is unknown; allowed: '
                       f'{"|".join(EMBED_DECAYS)}.')
    for name in ('b1', 'b2'):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f'train.{name}={getattr(self, name)} must be in [0, 1).')


@dataclasses.dataclass(frozen=True)
class EvalArgs(_Section):
  """The frequency bands and classes every evaluation reports (eval.*)."""

  band_edges: tuple[int, ...]
  count_edges: tuple[int, ...]
  frequent_count: int

  def validate(self) -> None:
    """A ValueError naming eval.band_edges, eval.count_edges or eval.frequent_count."""
    data_lib.validate_band_edges(self.band_edges)
    data_lib.frequent_classes(self.count_edges, self.frequent_count)

  def frequent_classes(self) -> list[str]:
    """The names of the frequency classes of the frequent types (data_lib.frequent_classes)."""
    return data_lib.frequent_classes(self.count_edges, self.frequent_count)


@dataclasses.dataclass(frozen=True)
class Sections:
  """A run's vocabulary-independent arguments: what start-up validates."""

  data: DataArgs
  train: TrainArgs
  eval: EvalArgs


@dataclasses.dataclass(frozen=True)
class RunArgs:
  """Everything a run is built from, typed and validated: `build_args` makes it."""

  model: model_lib.ModelArgs
  data: DataArgs
  train: TrainArgs
  eval: EvalArgs
  seed: int


@functools.lru_cache(maxsize=64)
def _sections(spec_json: str) -> Sections:
  spec = Spec(json.loads(spec_json))
  return Sections(data=DataArgs.from_section(spec.data),
                  train=TrainArgs.from_section(spec.train),
                  eval=EvalArgs.from_section(spec.eval))


def sections(spec: Spec) -> Sections:
  """The Spec's data, train and eval arguments, validated (no vocabulary needed); made once
  per distinct Spec: start-up makes them, `build_args` reuses them (they are frozen)."""
  return _sections(spec.to_json(sort_keys=True))


def model_args(spec: Spec, vocab_size: int) -> model_lib.ModelArgs:
  """The validated ModelArgs of a Spec (max_len = data.seq_len)."""
  return model_lib.ModelArgs.from_config(spec.model, vocab_size, spec.data.seq_len)


def build_args(spec: Spec, vocab_size: int) -> RunArgs:
  """The run's typed arguments, once the corpus gives the vocabulary size; a ValueError
  naming the first field out of range."""
  parts = sections(spec)
  return RunArgs(model=model_args(spec, vocab_size), data=parts.data, train=parts.train,
                 eval=parts.eval, seed=spec.seed)


def _plain(config: Any) -> dict[str, Any]:
  """A ConfigDict or a mapping as plain JSON types, exactly as config.json saves it."""
  if hasattr(config, 'to_json'):  # ml_collections.ConfigDict (FieldReferences resolved)
    return json.loads(config.to_json())
  return json.loads(json.dumps(dict(config)))


def validate(spec: Spec) -> Spec:
  """Raises a ValueError naming the first field out of range; returns `spec`. The checks
  that need the corpus's vocabulary size run when the run's arguments are built
  (`build_args`: ModelArgs)."""
  missing = [section for section in SECTIONS if section not in spec]
  if missing:
    raise ValueError(f'the config lacks the section(s) {", ".join(missing)}: start from '
                     'configs/lm.py (or configs/brown.py).')
  sections(spec)  # data, train and eval: their own dataclasses validate them
  embeddings.check_choices(spec.model)
  corpora.check_vocabulary(spec.data)
  return spec


def from_config(config: Any) -> Spec:
  """The frozen, migrated, validated Spec of a ConfigDict, or of a plain mapping (a saved
  config.json, summary.json's `config`)."""
  return validate(Spec(migrate_lib.migrate(_plain(config))))


def load_saved(workdir: str | os.PathLike) -> Spec:
  """The Spec saved in `workdir`; a FileNotFoundError that says how to make one."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f'{path} not found: {workdir} is not a training workdir '
        f'(train.py --workdir={workdir} writes it).')
  return from_config(json.loads(path.read_text()))
