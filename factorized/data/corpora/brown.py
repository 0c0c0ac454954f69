"""brown: the default corpus (protocol version `brown-v1`, after Bengio et al. 2003, JMLR 3,
Table 1).

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
     al. did (`data.vocab_from=all`, the default): words seen <= 3 times (`data.min_freq=4`)
     become `<unk>`; |V| = 17,906 with the two specials. (Theirs: 1,181,041 tokens, |V| =
     16,383; the tokenisation differs a little.) A word then has an id because of its valid
     and test occurrences too, though the model never trains on it as an input.
     `data.vocab_from=train` counts the train split alone, as PTB and WikiText do: a word
     seen fewer than `data.min_freq` times in train, or only in valid or test, is `<unk>`.
     `bpe` is trained on the train split only.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import re
import urllib.request
import zipfile

from absl import logging

from factorized import files
from factorized.data.corpora.base import EOS, SPLITS, Source, Split, batches, register

BROWN_URL = 'https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/brown.zip'
BROWN_MD5 = 'a0a8630959d3d937873b1265b0a05497'
BROWN_BYTES = 3_314_357
BROWN_SPLIT_TOKENS = (800_000, 200_000)  # train, valid; test is the rest
BROWN_PROTOCOL = 'brown-v1'
_BROWN_MEMBER = re.compile(r'brown/c[a-r]\d\d')


@register('brown', vocab_from='all')
def source(data_config, root: pathlib.Path) -> Source:
  """The Brown protocol of the module docstring."""
  del data_config
  return brown_source(find_brown(root))


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
  files.write_atomic(dest, data)
  return dest


def brown_source(path: pathlib.Path) -> Source:
  """The Brown protocol of the module docstring, over an already checked brown.zip."""
  fingerprint = {'corpus': 'brown', 'protocol': BROWN_PROTOCOL, 'md5': BROWN_MD5}
  return Source(fingerprint, functools.partial(brown_splits, path))


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
    read = functools.partial(batches, lines)
    splits[name] = Split(name, f'{path} ({name} split)', read, ends_with_eos)
  return splits
