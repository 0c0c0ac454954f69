"""Configs saved before a field existed, brought up to date: the one place that knows which
fields a saved config.json (a workdir's, or summary.json's `config` in a results directory)
may lack, and what its run computed in their place.

A field added after runs were saved (`_LATER_FIELDS`), an embedding kind's own field
(model.embed.band_cutoffs, ...) or a corpus's own (data.*): such a run behaved as the
field's default says, so `migrate` fills the default in (factorized/config/build.py calls
it on every config it reads), and a workdir compares a saved config with a new one as if
it held them (`defaults`, factorized/train/workdir.py).
"""

from __future__ import annotations

import json
from typing import Any

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


def _corpus_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """The fields the saved corpus's protocol decides, as the run resolved them:
  data.vocab_from (its own, or the corpus's choice where '' or absent)."""
  from factorized.data import corpora

  data = saved.get('data', {})
  known = data.get('corpus') in corpora.names()
  return {'data.vocab_from': corpora.vocab_from(data)} if known else {}


def defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """Every field that `saved` may lack, as flat names ('model.embed.rank') with the default
  its run computed (JSON types): `_field_defaults` and the saved corpus's."""
  return {**_field_defaults(), **_corpus_defaults(saved)}


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
  """`saved` (plain JSON types) with every field of `_field_defaults` it lacks set to its
  default: what a run saved before that field existed computed. A field left empty for the
  corpus's protocol to choose (data.vocab_from='') gets that choice, so a saved config
  records it."""
  for name, value in _corpus_defaults(saved).items():
    section, field = name.split('.')
    saved.setdefault(section, {})[field] = value
  for name, value in _field_defaults().items():
    *sections, field = name.split('.')
    tree = saved
    for section in sections:
      tree = tree.setdefault(section, {})
    tree.setdefault(field, value)
  return saved
