"""text: the user's files, `data.train_files` / `valid_files` / `test_files` (comma-separated
paths or globs; each glob sorted, files in the order given), read through
`datasets.load_dataset("text", ...)`. Every line, blank lines included, is one row with one
`<eos>` after it: the WikiText convention behind its published token counts. Files must be
UTF-8; the vocabulary of `word` is counted on train only.
"""

from __future__ import annotations

import codecs
import functools
import glob
import hashlib
import os
import pathlib
from collections.abc import Iterator

from factorized.data.corpora.base import LINES_PER_BATCH, SPLITS, Source, Split, register


@register('text', fields={
    'train_files': '',  # paths or globs, comma-separated
    'valid_files': '',
    'test_files': '',
})
def source(data_config, root: pathlib.Path) -> Source:
  """The files of data.train_files, valid_files and test_files."""
  files = {name: resolve_files(data_config.get(f'{name}_files', ''), f'{name}_files')
           for name in SPLITS}
  return text_source(files, root / 'hf_datasets', corpus='text')


def resolve_files(patterns: str, field: str) -> list[str]:
  """Comma-separated paths or globs -> files, each glob sorted; errors name `field`."""
  if not patterns or not patterns.strip():
    raise ValueError(f'data.{field} is empty: data.corpus=text needs the {field} paths or '
                     f'globs (comma-separated), e.g. --config.data.{field}=/data/train.txt.')
  files = []
  for pattern in (p.strip() for p in patterns.split(',')):
    if not pattern:
      continue
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matches:
      raise FileNotFoundError(f'data.{field}: no file matches {pattern!r}.')
    for match in matches:
      if not os.path.isfile(match):
        raise FileNotFoundError(f'data.{field}: {match} is not a file.')
    files.extend(matches)
  return files


def file_sha256(path: str) -> tuple[str, bool]:
  """(sha256, whether it holds a word) of a text file, checked to be UTF-8 on the way."""
  digest, decoder, offset = hashlib.sha256(), codecs.getincrementaldecoder('utf-8')(), 0
  has_words = False
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
      pending = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
      try:
        has_words = bool(decoder.decode(chunk).strip()) or has_words
      except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not UTF-8: byte {offset - pending + e.start} is '
                         f'{e.object[e.start]:#x} ({e.reason}). Convert the file to UTF-8.') from e
      offset += len(chunk)
  try:
    decoder.decode(b'', final=True)
  except UnicodeDecodeError as e:
    raise ValueError(f'{path} is not UTF-8: it ends inside a multi-byte character.') from e
  return digest.hexdigest(), has_words


def text_source(files: dict[str, list[str]], hf_cache_dir: pathlib.Path, *, corpus: str,
                fields: dict[str, str] | None = None) -> Source:
  """UTF-8 text files ({split: paths}), one row per line, read with datasets' `text` loader;
  `fields` names each split's config field in errors (default data.<split>_files)."""
  fingerprint = {'corpus': corpus}
  for name in SPLITS:
    field = (fields or {}).get(name, f'{name}_files')
    hashes = [file_sha256(f) for f in files[name]]
    if not any(has_words for _, has_words in hashes):
      raise ValueError(f'data.{field}: {", ".join(files[name])} hold no words: the {name} '
                       'split would be empty.')
    fingerprint[name] = [sha for sha, _ in hashes]

  def read(name):
    import datasets  # slow to import: only when text is read

    dataset = datasets.load_dataset('text', data_files={name: files[name]}, split=name,
                                    cache_dir=str(hf_cache_dir))
    yield from rows(dataset, 'text')

  def load():
    return {name: Split(name, f'data.{(fields or {}).get(name, f"{name}_files")} '
                              f'({", ".join(files[name])})', functools.partial(read, name))
            for name in SPLITS}
  return Source(fingerprint, load)


def rows(dataset, column: str) -> Iterator[list[str]]:
  """Batches of one string column's rows (None rows are empty lines)."""
  for batch in dataset.select_columns([column]).iter(batch_size=LINES_PER_BATCH):
    yield [row or '' for row in batch[column]]
