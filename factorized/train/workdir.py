"""A run's working directory: its saved config, and atomic JSON files in it.

Layout: config.json (the resolved config, written on the first start), tokenizer.json and
train_counts.npy (data/pipeline.py), checkpoints/ (orbax), TensorBoard events, summary.json and
eval_<split>.json.

A saved config compares with a new one field by field; a field it lacks (saved before the
field existed) counts as the default that factorized/config/migrate.py gives it.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any

from factorized import files
from factorized.config import migrate as migrate_lib
from factorized.config.build import CONFIG_FILE
from factorized.spec import Spec

# Fields that may differ between a saved and a new config without refusing the workdir
# (sections by their prefix): none of them changes what a run computes.
_IGNORED_FIELDS = ('overwrite', 'launcher.')


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


def config_differences(saved: dict, new: dict) -> list[str]:
  """Lists 'field: saved -> new' for every field that differs (but `_IGNORED_FIELDS`; a
  field that `saved` lacks counts as its default, migrate_lib.defaults)."""
  saved_flat = {**migrate_lib.defaults(saved), **_flatten(saved)}
  new_flat = _flatten(new)
  lines = []
  for name in sorted(set(saved_flat) | set(new_flat)):
    if name.startswith(_IGNORED_FIELDS):
      continue
    old_value, new_value = saved_flat.get(name, '<absent>'), new_flat.get(name, '<absent>')
    if old_value != new_value:
      lines.append(f'{name}: {old_value!r} -> {new_value!r}')
  return lines


def prepare_workdir(workdir: str | os.PathLike, config: Spec) -> bool:
  """Creates `workdir` or checks that its saved config matches `config`.

  Returns True when the workdir holds an earlier run of the same config (resume).
  A different saved config is refused unless `config.overwrite`; then the earlier
  run's files are moved, not deleted, into `overwritten-<UTC time>/`.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / CONFIG_FILE
  new = config.to_dict()
  if path.exists():
    saved = json.loads(path.read_text())
    differences = config_differences(saved, new)
    if not differences:
      return True
    if not config.overwrite:
      raise ValueError(
          f'{workdir} holds a run with a different config ({path}):\n  '
          + '\n  '.join(differences)
          + '\nUse another --workdir, or pass --config.overwrite=True to move that run '
          'aside (into overwritten-<time>/) and start afresh.')
    archive = workdir / datetime.datetime.now(datetime.timezone.utc).strftime(
        'overwritten-%Y%m%dT%H%M%SZ')
    archive.mkdir()
    for entry in workdir.iterdir():
      if entry != archive and not entry.name.startswith('overwritten-'):
        entry.rename(archive / entry.name)
  workdir.mkdir(parents=True, exist_ok=True)
  files.write_json_atomic(path, new)
  return False
