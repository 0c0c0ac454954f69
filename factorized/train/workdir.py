"""A run's working directory: its saved config, and atomic JSON files in it.

Layout: config.json (the resolved config, written on the first start), tokenizer.json and
train_counts.npy (data.py), checkpoints/ (orbax), TensorBoard events, summary.json and
eval_<split>.json.

Configs saved before an embedding kind's own field existed (model.embed.band_cutoffs, ...)
lack it; such a run behaved as the field's default says, so a missing kind field counts as
its default when configs are compared, and `migrate` (the one place old configs are
brought up to date; factorized/config/specs.py calls it) fills it in.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any

from factorized import files
from factorized.spec import Spec

CONFIG_FILE = 'config.json'
# Fields that may differ between a saved and a new config without refusing the workdir
# (sections by their prefix): none of them changes what a run computes.
_IGNORED_FIELDS = ('overwrite', 'launcher.')
# Fields added after runs were saved, with the default that computes what those runs did.
_LATER_FIELDS = {'model.head_chunk_rows': 0, 'model.head_chunk_vocab': 0, 'model.remat': False,
                 'model.embed.head_kind': 'dense', 'model.embed.head_rank': 0,
                 'eval.count_edges': [1, 4, 11, 101], 'eval.frequent_count': 11}


def _field_defaults() -> dict[str, Any]:
  """The fields a saved config may lack, as flat names with their defaults (JSON types):
  every embedding kind's own, every corpus's own, and `_LATER_FIELDS`."""
  from factorized import embeddings
  from factorized.data import corpora  # embeddings imports JAX: only where needed

  return {**_LATER_FIELDS,
          **{f'model.embed.{name}': json.loads(json.dumps(value))
             for name, value in embeddings.config_fields().items()},
          **{f'data.{name}': json.loads(json.dumps(value))
             for name, value in corpora.config_fields().items()}}


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
  field of `_field_defaults` that `saved` lacks counts as its default)."""
  saved_flat = {**_field_defaults(), **_corpus_defaults(saved), **_flatten(saved)}
  new_flat = _flatten(new)
  lines = []
  for name in sorted(set(saved_flat) | set(new_flat)):
    if name.startswith(_IGNORED_FIELDS):
      continue
    old_value, new_value = saved_flat.get(name, '<absent>'), new_flat.get(name, '<absent>')
    if old_value != new_value:
      lines.append(f'{name}: {old_value!r} -> {new_value!r}')
  return lines


def _corpus_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """The fields whose default is the saved corpus's protocol: data.vocab_from."""
  from factorized.data import corpora

  name = saved.get('data', {}).get('corpus')
  return {'data.vocab_from': corpora.corpus(name).vocab_from} if name in corpora.names() else {}


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
  """`saved` (plain JSON types) with every field of `_field_defaults` it lacks set to its
  default: what a run saved before that field existed computed. A field left empty for the
  corpus's protocol to choose (data.vocab_from='') gets that choice, so a saved config
  records it."""
  for name, value in _corpus_defaults(saved).items():
    section, field = name.split('.')
    if not saved.setdefault(section, {}).get(field):
      saved[section][field] = value
  for name, value in _field_defaults().items():
    *sections, field = name.split('.')
    tree = saved
    for section in sections:
      tree = tree.setdefault(section, {})
    tree.setdefault(field, value)
  return saved


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
