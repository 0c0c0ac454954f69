"""Where a config stops: the one function that turns a config file's ConfigDict (or a run's
saved config.json) into a frozen, migrated and validated Spec.

Each entry point reads its config file once and calls `from_config` before anything is
built, downloaded or written. Once the corpus gives the vocabulary size, the run's Spec
(factorized/spec.py) becomes typed arguments, once (factorized/config/build.py, `build_args`:
the same dataclasses validate the data, train and eval sections here); the model, costs,
optimizer, summary and evaluators take those or plain values. A bad field ends here as a
ValueError naming it and the fix (the entry points print it as one line, exit code 2).
Configs saved before a field existed are migrated here (factorized/config/migrate.py),
whether they come from a workdir or a results directory.

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
from factorized.config import build
from factorized.config import migrate as migrate_lib
from factorized.data import corpora
from factorized.spec import Spec

SECTIONS = ('data', 'model', 'train', 'eval')
CONFIG_FILE = 'config.json'  # a run's config, saved in its workdir (factorized/train/workdir.py)


def _plain(config: Any) -> dict[str, Any]:
  """A ConfigDict or a mapping as plain JSON types, exactly as config.json saves it."""
  if hasattr(config, 'to_json'):  # ml_collections.ConfigDict (FieldReferences resolved)
    return json.loads(config.to_json())
  return json.loads(json.dumps(dict(config)))


def validate(spec: Spec) -> Spec:
  """Raises a ValueError naming the first field out of range; returns `spec`. The checks
  that need the corpus's vocabulary size run when the run's arguments are built
  (factorized/config/build.py, `build_args`: ModelArgs)."""
  missing = [section for section in SECTIONS if section not in spec]
  if missing:
    raise ValueError(f'the config lacks the section(s) {", ".join(missing)}: start from '
                     'configs/lm.py (or configs/brown.py).')
  build.sections(spec)  # data, train and eval: their own dataclasses validate them
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
