"""hf: a Hugging Face dataset, `data.hf_name` (a hub name, or a local `save_to_disk`
directory), `data.hf_config`, the three `data.hf_*_split` names and `data.text_column`. Each
row is one line, and from there it is the `text` path.
"""

from __future__ import annotations

import functools
import os
import pathlib

from factorized.data.corpora.base import SPLITS, Source, Split, register
from factorized.data.corpora.text import rows


@register('hf', fields={
    'hf_name': '',  # e.g. 'wikitext' (or a local `save_to_disk` directory)
    'hf_config': '',  # e.g. 'wikitext-103-raw-v1'
    'hf_train_split': 'train',
    'hf_valid_split': 'validation',
    'hf_test_split': 'test',
    'text_column': 'text',
})
def source(data_config, root: pathlib.Path) -> Source:
  del root
  return hf_source(data_config)


def hf_source(data_config) -> Source:
  """A hub dataset (`data.hf_name`, `data.hf_config`) or a local `save_to_disk` directory."""
  import datasets  # slow to import: only for this corpus
  name, config = data_config.get('hf_name', ''), data_config.get('hf_config', '') or None
  column = data_config.get('text_column', 'text')
  if not name:
    raise ValueError("data.hf_name is empty: data.corpus=hf needs a dataset name (e.g. "
                     "'wikitext' with data.hf_config='wikitext-103-raw-v1') or a directory "
                     "written by Dataset.save_to_disk.")
  local = os.path.isdir(os.path.expanduser(name))
  try:
    if local:
      loaded = datasets.load_from_disk(os.path.expanduser(name))
    else:
      loaded = datasets.load_dataset(name, config)
  except Exception as e:
    raise ValueError(f'data.hf_name={name!r}, data.hf_config={config!r}: loading failed ({e}). '
                     'Check the name and config, the network, or save the dataset locally '
                     'with save_to_disk and pass its directory.') from e
  if not isinstance(loaded, datasets.DatasetDict):
    raise ValueError(f'data.hf_name={name!r} holds one split; it needs a DatasetDict with '
                     'train, valid and test splits.')
  splits, fingerprint = {}, {'corpus': 'hf', 'name': name, 'config': config, 'column': column}
  for split in SPLITS:
    field = f'hf_{split}_split'
    hf_split = data_config.get(field, {'valid': 'validation'}.get(split, split))
    if hf_split not in loaded:
      raise ValueError(f'data.{field}={hf_split!r} is not a split of {name!r}; it has '
                       f'{sorted(loaded)}.')
    dataset = loaded[hf_split]
    dtype = getattr(dataset.features.get(column), 'dtype', None)
    if dtype not in ('string', 'large_string'):
      raise ValueError(f'data.text_column={column!r} is not a text column of {name!r}/'
                       f'{hf_split}; its columns: {dataset.features}.')
    if dataset.num_rows == 0:
      raise ValueError(f'data.{field}={hf_split!r} of {name!r} is empty.')
    # The fingerprint datasets keeps for the split's contents (saved in state.json locally).
    fingerprint[split] = dataset._fingerprint
    splits[split] = Split(split, f'{name}/{hf_split}',
                          functools.partial(rows, dataset, column))
  return Source(fingerprint, lambda: splits)
