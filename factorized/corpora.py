"""Corpora: where the text comes from, as train / valid / test lines.

Three corpora, picked by `data.corpus`:

brown (the default; protocol version `brown-v1`, after Bengio et al. 2003, JMLR 3, Table 1):
  1. The file is `brown.zip` exactly as NLTK distributes it (3,314,357 bytes, md5
     a0a8630959d3d937873b1265b0a05497), looked for in $FACTORIZED_DATA_DIR, then in the cache
     directory (`data.cache_dir`, else $FACTORIZED_CACHE_DIR, else ~/.cache/factorized). When in
     neither it is downloaded from `BROWN_URL` (nltk_data, gh-pages branch) into the cache
     directory, md5-checked and written atomically. A file of the wrong checksum is refused.
  2. The 500 members `brown/ca01` ... `brown/cr09` are read in name order (`cats.txt`,
     `CONTENTS` and `README` are not text).
  3. Each non-blank line is one sentence. It is split on whitespace; each `word/tag` becomes
     `word` (split on the last `/`); case and punctuation are kept; one `<eos>` follows every
     sentence. This gives 1,161,192 words + 57,340 `<eos>` = 1,218,532 tokens.
  4. The token stream is cut by count: the first 800,000 tokens are train, the next 200,000
     valid, the remaining 218,532 test. The cuts fall inside sentences, as in the published
     protocol, so train and valid end without an `<eos>` and valid and test begin mid-sentence.
  5. With the `word` tokenizer the vocabulary is counted over the whole corpus, as Bengio et
     al. did: words seen <= 3 times (`data.min_freq=4`) become `<unk>`; |V| = 17,906 with the
     two specials. (Theirs: 1,181,041 tokens, |V| = 16,383; the tokenisation differs a little.)
     `bpe` is trained on the train split only.

text: the user's files, `data.train_files` / `valid_files` / `test_files` (comma-separated paths
  or globs; each glob sorted, files in the order given), read through
  `datasets.load_dataset("text", ...)`. Every line, blank lines included, is one row with one
  `<eos>` after it: the WikiText convention behind its published token counts. Files must be
  UTF-8; the vocabulary of `word` is counted on train only.

hf: a Hugging Face dataset, `data.hf_name` (a hub name, or a local `save_to_disk` directory),
  `data.hf_config`, the three `data.hf_*_split` names and `data.text_column`. Each row is one
  line, and from there it is the `text` path.

Every corpus is handed on as a `Source`: three `Split`s that yield batches of lines, and a
JSON-able fingerprint of the text (checksums) that keys the tokenisation cache.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import glob
import hashlib
import os
import pathlib
import re
import urllib.request
import zipfile
from collections.abc import Callable, Iterator

from absl import logging

from factorized import workdir as workdir_lib

BROWN_URL = 'https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/brown.zip'
BROWN_MD5 = 'a0a8630959d3d937873b1265b0a05497'
BROWN_BYTES = 3_314_357
BROWN_SPLIT_TOKENS = (800_000, 200_000)  # train, valid; test is the rest
BROWN_PROTOCOL = 'brown-v1'
CORPORA = ('brown', 'text', 'hf')
SPLITS = ('train', 'valid', 'test')
EOS = '<eos>'
_LINES_PER_BATCH = 10_000
_BROWN_MEMBER = re.compile(r'brown/c[a-r]\d\d')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split's text: `read()` yields its lines in batches; `source` names it in errors."""
  name: str
  source: str
  read: Callable[[], Iterator[list[str]]]
  eos_after_last: bool = True  # False where a cut falls inside a sentence (brown)


@dataclasses.dataclass(frozen=True)
class Source:
  """A corpus: its fingerprint (checksums, JSON-able), `load()` -> its three `Split`s, and the
  splits whose words the `word` vocabulary counts."""
  fingerprint: dict
  load: Callable[[], dict[str, Split]]
  vocab_splits: tuple[str, ...] = ('train',)


def cache_root(data_config) -> pathlib.Path:
  """data.cache_dir, else $FACTORIZED_CACHE_DIR, else ~/.cache/factorized."""
  root = data_config.get('cache_dir', '') or os.environ.get('FACTORIZED_CACHE_DIR', '')
  return pathlib.Path(root or '~/.cache/factorized').expanduser()


def load_source(data_config, root: pathlib.Path) -> Source:
  """The `Source` of `data.corpus`: checksums now, the text only once `load()` is called."""
  corpus = data_config.corpus
  if corpus == 'brown':
    return brown_source(find_brown(root))
  if corpus == 'text':
    return text_source(data_config, root / 'hf_datasets')
  if corpus == 'hf':
    return hf_source(data_config)
  raise ValueError(f'data.corpus={corpus!r} is not one of {CORPORA}.')


# --- brown -----------------------------------------------------------------------------------


def find_brown(cache_dir: pathlib.Path, *, url: str = BROWN_URL) -> pathlib.Path:
  """brown.zip from $FACTORIZED_DATA_DIR or `cache_dir`, downloading it there when absent."""
  data_dir = os.environ.get('FACTORIZED_DATA_DIR', '')
  candidates = [pathlib.Path(data_dir).expanduser() / 'brown.zip'] if data_dir else []
  candidates.append(cache_dir / 'brown.zip')
  for path in candidates:
    if path.exists():
      check_brown(path)
      return path
  return download_brown(cache_dir, url=url)


def check_brown(path: pathlib.Path) -> None:
  """Raises a ValueError naming `path` unless it is NLTK's brown.zip (size and md5)."""
  data = path.read_bytes()
  md5 = hashlib.md5(data).hexdigest()
  if len(data) != BROWN_BYTES or md5 != BROWN_MD5:
    raise ValueError(
        f'{path} is not NLTK\'s brown.zip: {len(data):,} bytes, md5 {md5}; expected '
        f'{BROWN_BYTES:,} bytes, md5 {BROWN_MD5}. Delete it and download it again from '
        f'{BROWN_URL}.')


def download_brown(cache_dir: pathlib.Path, *, url: str = BROWN_URL,
                   timeout_s: float = 60.0) -> pathlib.Path:
  """Downloads brown.zip from `url` into `cache_dir`, md5-checked, written atomically."""
  cache_dir.mkdir(parents=True, exist_ok=True)
  dest = cache_dir / 'brown.zip'
  where = (f'put brown.zip ({BROWN_BYTES:,} bytes, md5 {BROWN_MD5}, from {BROWN_URL}) in '
           f'$FACTORIZED_DATA_DIR or in {cache_dir}')
  logging.info('Downloading the Brown corpus from %s to %s', url, dest)
  try:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
      data = response.read()
  except OSError as e:  # URLError, HTTPError, timeouts
    raise FileNotFoundError(
        f'brown.zip is in neither $FACTORIZED_DATA_DIR '
        f'({os.environ.get("FACTORIZED_DATA_DIR") or "unset"}) nor {cache_dir}, and downloading '
        f'it from {url} failed ({e}). Offline, {where}.') from e
  md5 = hashlib.md5(data).hexdigest()
  if md5 != BROWN_MD5:
    raise ValueError(
        f'The file downloaded from {url} is corrupt ({len(data):,} bytes, md5 {md5}; expected '
        f'md5 {BROWN_MD5}); nothing was written. Try again, or {where}.')
  workdir_lib.write_atomic(dest, data)
  return dest


def brown_source(path: pathlib.Path) -> Source:
  """The Brown protocol of the module docstring, over an already checked brown.zip."""
  fingerprint = {'corpus': 'brown', 'protocol': BROWN_PROTOCOL, 'md5': BROWN_MD5}
  return Source(fingerprint, functools.partial(brown_splits, path), vocab_splits=SPLITS)


def brown_splits(path: pathlib.Path) -> dict[str, Split]:
  """Reads brown.zip and cuts it by the protocol into train / valid / test lines."""
  tokens = []
  with zipfile.ZipFile(path) as archive:
    members = sorted(n for n in archive.namelist() if _BROWN_MEMBER.fullmatch(n))
    for member in members:
      try:
        text = archive.read(member).decode('utf-8')
      except UnicodeDecodeError as e:
        raise ValueError(f'{path}:{member} is not UTF-8 ({e}).') from e
      for line in text.splitlines():
        words = line.split()
        if words:
          tokens.extend(word.rsplit('/', 1)[0] for word in words)
          tokens.append(EOS)
  cuts = [0, BROWN_SPLIT_TOKENS[0], sum(BROWN_SPLIT_TOKENS), len(tokens)]
  splits = {}
  for name, start, stop in zip(SPLITS, cuts[:-1], cuts[1:], strict=True):
    lines = [line.strip() for line in ' '.join(tokens[start:stop]).split(EOS)]
    ends_with_eos = tokens[stop - 1] == EOS
    lines = lines[:-1] if ends_with_eos else lines
    read = functools.partial(_batches, lines)
    splits[name] = Split(name, f'{path} ({name} split)', read, ends_with_eos)
  return splits


def _batches(lines: list[str]) -> Iterator[list[str]]:
  for start in range(0, len(lines), _LINES_PER_BATCH):
    yield lines[start:start + _LINES_PER_BATCH]


# --- text and hf -----------------------------------------------------------------------------


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


def text_source(data_config, hf_cache_dir: pathlib.Path) -> Source:
  """The user's UTF-8 text files, one row per line, read with datasets' `text` loader."""
  files, fingerprint = {}, {'corpus': 'text'}
  for name in SPLITS:
    field = f'{name}_files'
    files[name] = resolve_files(data_config.get(field, ''), field)
    hashes = [file_sha256(f) for f in files[name]]
    if not any(has_words for _, has_words in hashes):
      raise ValueError(f'data.{field}: {", ".join(files[name])} hold no words: the {name} '
                       'split would be empty.')
    fingerprint[name] = [sha for sha, _ in hashes]

  def read(name):
    import datasets  # slow to import: only when text is read

    dataset = datasets.load_dataset('text', data_files={name: files[name]}, split=name,
                                    cache_dir=str(hf_cache_dir))
    yield from _rows(dataset, 'text')

  def load():
    return {name: Split(name, f'data.{name}_files ({", ".join(files[name])})',
                        functools.partial(read, name)) for name in SPLITS}
  return Source(fingerprint, load)


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
                          functools.partial(_rows, dataset, column))
  return Source(fingerprint, lambda: splits)


def _rows(dataset, column: str) -> Iterator[list[str]]:
  """Batches of one string column's rows (None rows are empty lines)."""
  for batch in dataset.select_columns([column]).iter(batch_size=_LINES_PER_BATCH):
    yield [row or '' for row in batch[column]]
