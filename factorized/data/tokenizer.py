"""Tokenizers: `word` (whitespace words, a counted vocabulary) and `bpe` (byte-level BPE).

Both turn a batch of lines into one int32 array with an `<eos>` after every line, and share
the special ids <unk> = 0 and <eos> = 1 (the text `<unk>` or `<eos>` maps to them too).

word: a line's tokens are its whitespace-separated words. The vocabulary is the specials, then
  the words seen at least `data.min_freq` times, by descending count, ties by string (so ids
  are deterministic), capped at `data.vocab_size` entries in all (0 = no cap). Other words are
  <unk>. `data.min_freq` applies to `word` only.
bpe: byte-level BPE (GPT-2 style) trained with the `tokenizers` library on the train split,
  `data.vocab_size` entries in all: the 2 specials, the 256 bytes and the merges. Every byte is
  in the alphabet, so bpe never emits <unk>. Lines are whitespace-normalised first (words
  joined by one space), so a line's ids are the concatenation of its words' ids, each word
  preceded by a space: word-level perplexity divides the same total NLL by the word count.

A tokenizer is saved as one JSON file: its kind and state, the tokenizer config and the key
of the corpus it was made for (`save_tokenizer` / `load_tokenizer`).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from factorized import files

UNK, EOS = '<unk>', '<eos>'
SPECIALS = (UNK, EOS)
UNK_ID, EOS_ID = 0, 1
TOKENIZERS = ('word', 'bpe')
BPE_MIN_VOCAB = len(SPECIALS) + 256  # the specials and the byte alphabet


def tokenizer_config(data_config) -> dict:
  """The fields of `data_config` that define the tokenizer, checked; part of the cache key."""
  kind, size = data_config.tokenizer, data_config.vocab_size
  if kind == 'word':
    if size < 0 or 0 < size <= len(SPECIALS):
      raise ValueError(
          f'data.vocab_size={size} cannot hold the {len(SPECIALS)} special tokens {SPECIALS} '
          f'and a word: use 0 (no cap) or more than {len(SPECIALS)}.')
    if data_config.min_freq < 0:
      raise ValueError(f'data.min_freq={data_config.min_freq} must be >= 0.')
    return {'kind': 'word', 'vocab_size': int(size), 'min_freq': int(data_config.min_freq)}
  if kind == 'bpe':
    if size < BPE_MIN_VOCAB:
      raise ValueError(
          f'data.vocab_size={size} is too small for data.tokenizer=bpe: it must hold the '
          f'{len(SPECIALS)} special tokens and the 256-byte alphabet; use >= {BPE_MIN_VOCAB} '
          '(e.g. 8000).')
    return {'kind': 'bpe', 'vocab_size': int(size)}
  raise ValueError(f'data.tokenizer={kind!r} is not one of {TOKENIZERS}.')


def count_words(line_batches: Iterable[list[str]]) -> collections.Counter:
  """Whitespace-word counts over batches of lines."""
  counts = collections.Counter()
  for lines in line_batches:
    counts.update(' '.join(lines).split())
  return counts


class WordTokenizer:
  """Whitespace words -> ids from a fixed vocabulary; unknown words -> <unk>."""

  kind = 'word'

  def __init__(self, vocab: Sequence[str]):
    if tuple(vocab[:len(SPECIALS)]) != SPECIALS:
      raise ValueError(f'A word vocabulary starts with {SPECIALS}, not {tuple(vocab[:2])}.')
    self.vocab = list(vocab)
    self._ids = {token: i for i, token in enumerate(self.vocab)}

  @classmethod
  def from_counts(cls, counts: collections.Counter, *, min_freq: int,
                  max_size: int = 0) -> WordTokenizer:
    """Specials, then words with count >= min_freq by (-count, word), at most max_size in all."""
    words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
                   key=lambda w: (-counts[w], w))
    if max_size:
      words = words[:max_size - len(SPECIALS)]
    if not counts:
      raise ValueError('The vocabulary splits hold no words: the corpus is empty.')
    if not words:
      top = max(counts.values(), default=0)
      raise ValueError(f'data.min_freq={min_freq} leaves no word in the vocabulary (the most '
                       f'frequent word is seen {top} times): lower data.min_freq.')
    return cls(list(SPECIALS) + words)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, text: str) -> list[int]:
    """The ids of the whitespace words of `text` (no <eos> added)."""
    get = self._ids.get
    return [get(word, UNK_ID) for word in text.split()]

  def encode_lines(self, lines: Sequence[str]) -> tuple[np.ndarray, int]:
    """(int32 ids with an <eos> after every line, the number of whitespace words)."""
    get, ids, num_words = self._ids.get, [], 0
    for line in lines:
      words = line.split()
      num_words += len(words)
      ids.extend([get(word, UNK_ID) for word in words])
      ids.append(EOS_ID)
    return np.asarray(ids, dtype=np.int32), num_words

  def decode(self, ids: Iterable[int]) -> str:
    """The tokens of `ids`, joined by spaces."""
    return ' '.join(self.vocab[int(i)] for i in ids)

  def id_to_token(self, token_id: int) -> str:
    """The token string of one id."""
    return self.vocab[int(token_id)]

  def token_to_id(self, token: str) -> int:
    """The id of one token (<unk>'s when it is not in the vocabulary)."""
    return self._ids.get(token, UNK_ID)

  def state(self) -> dict:
    return {'vocab': self.vocab}


class BpeTokenizer:
  """Byte-level BPE through the `tokenizers` library."""

  kind = 'bpe'

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    for i, token in enumerate(SPECIALS):
      if tokenizer.token_to_id(token) != i:
        raise ValueError(f'A bpe tokenizer needs {token} at id {i}.')
    self._tokenizer = tokenizer

  @classmethod
  def train(cls, line_batches: Iterable[list[str]], *, vocab_size: int) -> BpeTokenizer:
    """Trains `vocab_size` entries (specials, bytes, merges) on batches of lines."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    normalised = ([' '.join(line.split()) for line in lines] for lines in line_batches)
    tokenizer.train_from_iterator(normalised, trainer)
    return cls(tokenizer)

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, whitespace-normalised (no <eos> added)."""
    return self._tokenizer.encode(' '.join(text.split()), add_special_tokens=False).ids

  def encode_lines(self, lines: Sequence[str]) -> tuple[np.ndarray, int]:
    """(int32 ids with an <eos> after every line, the number of whitespace words)."""
    words = [line.split() for line in lines]
    encodings = self._tokenizer.encode_batch([' '.join(w) for w in words],
                                             add_special_tokens=False)
    ids = []
    for encoding in encodings:
      ids.extend(encoding.ids)
      ids.append(EOS_ID)
    return np.asarray(ids, dtype=np.int32), sum(map(len, words))

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids`, special tokens shown."""
    ids = [int(i) for i in ids]
    return self._tokenizer.decode(ids, skip_special_tokens=False).strip()

  def id_to_token(self, token_id: int) -> str:
    """The token string of one id (byte-level: a space shows as 'Ġ')."""
    return self._tokenizer.id_to_token(int(token_id))

  def token_to_id(self, token: str) -> int:
    """The id of one token string (<unk>'s when it is not in the vocabulary)."""
    token_id = self._tokenizer.token_to_id(token)
    return UNK_ID if token_id is None else token_id

  def state(self) -> dict:
    return {'tokenizer': json.loads(self._tokenizer.to_str())}


Tokenizer = WordTokenizer | BpeTokenizer


def train_tokenizer(config: dict, vocab_batches: Iterable[list[str]],
                    train_batches: Iterable[list[str]]) -> Tokenizer:
  """A tokenizer for `config` (from `tokenizer_config`): word counts `vocab_batches`, bpe
  trains on `train_batches`; each is consumed only by the kind that needs it."""
  if config['kind'] == 'word':
    return WordTokenizer.from_counts(count_words(vocab_batches), min_freq=config['min_freq'],
                                     max_size=config['vocab_size'])
  return BpeTokenizer.train(train_batches, vocab_size=config['vocab_size'])


def tokenizer_json(tokenizer: Tokenizer, *, config: dict, corpus_key: str) -> str:
  """The saved form: deterministic JSON of kind, config, corpus key and state."""
  record = {'kind': tokenizer.kind, 'config': config, 'corpus_key': corpus_key,
            'state': tokenizer.state()}
  return json.dumps(record, sort_keys=True, ensure_ascii=False)


def save_tokenizer(path: str | os.PathLike, text: str) -> None:
  """Writes `tokenizer_json(...)` output to `path` atomically."""
  files.write_atomic(path, text)


def load_tokenizer(path: str | os.PathLike) -> tuple[Tokenizer, dict]:
  """(tokenizer, record without its state) from a file written by `save_tokenizer`."""
  try:
    record = json.loads(pathlib.Path(path).read_text(encoding='utf-8'))
    state = record.pop('state')
    if record['kind'] == 'word':
      return WordTokenizer(state['vocab']), record
    if record['kind'] == 'bpe':
      return BpeTokenizer(tokenizers.Tokenizer.from_str(json.dumps(state['tokenizer']))), record
    raise ValueError(f'unknown kind {record["kind"]!r}')
  except Exception as e:  # a truncated, hand-edited or foreign file
    raise ValueError(f'{path} is not a readable factorized tokenizer ({e}); delete it to '
                     'rebuild it, or point to the run that made it.') from e
