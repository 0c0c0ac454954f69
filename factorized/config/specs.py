"""Where a config stops: the one function that turns a config file's ConfigDict (or a run's
saved config.json) into a frozen, migrated and validated Spec.

Each entry point reads its config file once and calls `from_config` before anything is
built, downloaded or written; everything below takes the Spec (factorized/spec.py) or plain
arguments. A bad field ends here as a ValueError naming it and the fix (the entry points
print it as one line, exit code 2). Configs saved before a field existed are migrated here
(factorized/config/migrate.py), whether they come from a workdir or a results directory.

Sections: `data` (corpus, tokenizer, seq_len), `model` (sizes, `embed`: the kind and its
fields), `train` (optimizer, schedule, batches, checkpoints), `eval` (bands) and `launcher`
(SLURM resources); plus `seed` and `overwrite`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from factorized import embeddings
from factorized.config import migrate as migrate_lib
from factorized.data import corpora
from factorized.data import pipeline as data_lib
from factorized.spec import Spec

SECTIONS = ('data', 'model', 'train', 'eval')
CONFIG_FILE = 'config.json'  # a run's config, saved in its workdir (factorized/train/workdir.py)
# train.embed_decay: which of the embedding table's parameters weight decay applies to
# (factorized/train/optim.py).
EMBED_DECAYS = ('table', 'factors', 'none')


def _plain(config: Any) -> dict[str, Any]:
  """A ConfigDict or a mapping as plain JSON types, exactly as config.json saves it."""
  if hasattr(config, 'to_json'):  # ml_collections.ConfigDict (FieldReferences resolved)
    return json.loads(config.to_json())
  return json.loads(json.dumps(dict(config)))


def validate_train_config(train_config: Spec) -> None:
  """Raises a ValueError naming the first `train.*` field that is out of range."""
  positive = ('num_steps', 'batch_size', 'grad_accum_steps', 'eval_every', 'eval_batch_size',
              'ckpt_every', 'keep_checkpoints', 'log_every')
  for name in positive:
    value = train_config[name]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'train.{name}={value!r} must be a positive integer.')
  if train_config.batch_size % train_config.grad_accum_steps:
    raise ValueError(
        f'train.batch_size={train_config.batch_size} must be divisible by '
        f'train.grad_accum_steps={train_config.grad_accum_steps}.')
  if not train_config.lr > 0:
    raise ValueError(f'train.lr={train_config.lr} must be > 0.')
  if not 0 <= train_config.min_lr_ratio <= 1:
    raise ValueError(f'train.min_lr_ratio={train_config.min_lr_ratio} must be in [0, 1].')
  if not 0 <= train_config.warmup_steps < train_config.num_steps:
    raise ValueError(
        f'train.warmup_steps={train_config.warmup_steps} must be in '
        f'[0, train.num_steps={train_config.num_steps}).')
  if train_config.weight_decay < 0:
    raise ValueError(f'train.weight_decay={train_config.weight_decay} must be >= 0.')
  if not train_config.grad_clip > 0:
    raise ValueError(f'train.grad_clip={train_config.grad_clip} must be > 0.')
  if train_config.embed_decay not in EMBED_DECAYS:
    raise ValueError(f'train.embed_decay={train_config.embed_decay!r} is unknown; allowed: '
                     f'{"|".join(EMBED_DECAYS)}.')
  for name in ('b1', 'b2'):
    if not 0 <= train_config[name] < 1:
      raise ValueError(f'train.{name}={train_config[name]} must be in [0, 1).')


def validate(spec: Spec) -> Spec:
  """Raises a ValueError naming the first field out of range; returns `spec`. The checks
  that need the corpus's vocabulary size run when the model is built (ModelArgs)."""
  missing = [section for section in SECTIONS if section not in spec]
  if missing:
    raise ValueError(f'the config lacks the section(s) {", ".join(missing)}: start from '
                     'configs/lm.py (or configs/brown.py).')
  seq_len = spec.data.seq_len
  if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
    raise ValueError(f'data.seq_len={seq_len!r} must be a positive integer.')
  validate_train_config(spec.train)
  data_lib.validate_band_edges(spec.eval.band_edges)
  data_lib.frequent_classes(spec.eval.count_edges, spec.eval.frequent_count)
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
