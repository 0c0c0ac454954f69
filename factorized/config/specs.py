"""Where a config stops: the one function that turns a config file's ConfigDict (or a run's
saved config.json) into a frozen, migrated and validated Spec.

Each entry point reads its config file once and calls `from_config` before anything is
built, downloaded or written; everything below takes the Spec (factorized/spec.py) or plain
arguments. A bad field ends here as a ValueError naming it and the fix (the entry points
print it as one line, exit code 2). Configs saved before a field existed are migrated here,
by `workdir.migrate`, whether they come from a workdir or a results directory.

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
from factorized.data import corpora
from factorized.data import pipeline as data_lib
from factorized.spec import Spec
from factorized.train import optim
from factorized.train import workdir as workdir_lib

SECTIONS = ('data', 'model', 'train', 'eval')


def _plain(config: Any) -> dict[str, Any]:
  """A ConfigDict or a mapping as plain JSON types, exactly as config.json saves it."""
  if hasattr(config, 'to_json'):  # ml_collections.ConfigDict (FieldReferences resolved)
    return json.loads(config.to_json())
  return json.loads(json.dumps(dict(config)))


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
  optim.validate_train_config(spec.train)
  data_lib.validate_band_edges(spec.eval.band_edges)
  data_lib.frequent_classes(spec.eval.count_edges, spec.eval.frequent_count)
  embeddings.check_choices(spec.model)
  corpora.check_vocabulary(spec.data)
  return spec


def from_config(config: Any) -> Spec:
  """The frozen, migrated, validated Spec of a ConfigDict, or of a plain mapping (a saved
  config.json, summary.json's `config`)."""
  return validate(Spec(workdir_lib.migrate(_plain(config))))


def load_saved(workdir: str | os.PathLike) -> Spec:
  """The Spec saved in `workdir`; a FileNotFoundError that says how to make one."""
  path = pathlib.Path(workdir) / workdir_lib.CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f'{path} not found: {workdir} is not a training workdir '
        f'(train.py --workdir={workdir} writes it).')
  return from_config(json.loads(path.read_text()))
