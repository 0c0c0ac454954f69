"""Corpus -> tokenizer -> token arrays -> deterministic, resumable, per-process batches.

`prepare_corpus(config.data)` gives a `Corpus`: the three splits as 1-D int32 token arrays
(an <eos> after every sentence or line), the tokenizer and per-split word counts. Where the
text comes from, and the exact Brown protocol, is in `corpora/`; the tokenizers are in
`tokenizer.py`.

Cache: tokenised splits live in <cache>/corpora/<corpus>-<tokenizer>-<key>/ (train.npy,
valid.npy, test.npy, tokenizer.json, meta.json), <cache> being the cache root
(factorized/cache.py: data.cache_dir, else $FACTORIZED_CACHE_DIR, else ~/.cache/factorized).
The key hashes the corpus text (brown.zip's md5, the sha256 of each text file, or the hub
dataset's fingerprint), `PROTOCOL_VERSION` and the tokenizer config (kind, vocab_size,
min_freq). An entry is written to a temporary directory and renamed into place, so a crash
never leaves half of one. A second run loads it and does not tokenise again
(`Corpus.from_cache`).

Run directory: with `run_dir` (the run's workdir) the tokenizer is saved there as
tokenizer.json on first use; later calls (eval.py) check that the corpus uses exactly that
tokenizer, and reuse it when the cache has to be rebuilt. Beside it, train_counts.npy holds
the train split's count of every token id (int64, V), written once (`save_train_counts`)
and read back with `load_train_counts`: the frequency order that the `adaptive` embedding,
frequency bands and frequency-weighted post-hoc compression use, kept with the run.

Word counts: `Corpus.words[split]` = whitespace words + <eos>s of the split, the denominator of
word-level perplexity (total NLL / words); with `word` it equals the number of tokens.

Batches (B = global batch size, B_local = B / process_count, L = data.seq_len):
- Train: the train stream is packed into rows of L + 1 tokens that overlap by one token (row i
  is tokens[i*L : i*L + L + 1]; inputs = row[:-1], targets = row[1:]), so every token is a
  target once per epoch except the first and a tail of fewer than L. Each epoch visits all
  rows in the order np.random.default_rng([seed, epoch]).permutation(rows). Batches run on
  across the epoch boundary: a batch may end one epoch and begin the next; nothing is dropped
  and every batch has the full shape. The position is {'epoch', 'index', 'rows_per_epoch'}
  (JSON, for an orbax JsonSave); restored, the iterator yields exactly the batch that would
  have come next.
- Processes: every process computes the same global batch and keeps rows
  [p * B_local, (p + 1) * B_local); together the slices are the global batch.
- Eval: every token of the split is a target exactly once, so the number of evaluated targets
  is the split's length. Target j is tokens[j] with input tokens[j - 1]; target 0 gets input
  <eos>, as if the split began a sentence (for `text` and `hf` it does; Brown's valid and test
  begin mid-sentence, so this one context is approximate). <eos> and <unk> are scored as
  ordinary targets. Windows of L targets start every S tokens (the stride, default L): window
  w holds targets [w S, w S + L) with the L tokens before each as inputs; window 0 scores all
  its targets, every later window only its last S, so each target is scored once, and with
  at least L - S tokens of context after the first window. S = L (the default) gives
  non-overlapping windows, where the first target of a window sees one token. The last
  window and the last batch are padded with mask 0.
- Frequency order (factorized/frequency.py): token ids by train-split count, most frequent
  first, ties by id. Frequency bands (`frequency_bands`): every token id gets the band of its
  rank in that order with <unk> left out (rank 1 = most frequent): with edges (100, 1000,
  10000) the bands are 1-100, 101-1000, 1001-10000 and 10001+, and <unk> is a band of its own.
  Frequency classes (`frequency_classes`): every token id gets the class of its train-split
  count: with edges (1, 4, 11, 101) the classes are 0 (a type the train split never shows:
  with Brown's whole-corpus vocabulary, a valid- or test-only word), 1-3, 4-10, 11-100 and
  101+ train occurrences, and <unk> is a class of its own. Bands say where a type ranks,
  classes how much train evidence its row had.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator

import numpy as np
from absl import logging

from factorized import cache, files, frequency
from factorized.data import corpora
from factorized.data import tokenizer as tokenizer_lib

PROTOCOL_VERSION = 'factorized-data-v1'
TOKENIZER_FILE = 'tokenizer.json'
TRAIN_COUNTS_FILE = 'train_counts.npy'
SPLITS = corpora.SPLITS


@dataclasses.dataclass
class Corpus:
  """Tokenised splits, the tokenizer and word counts; see the module docstring."""
  splits: dict[str, np.ndarray]
  vocab_size: int
  tokenizer: tokenizer_lib.Tokenizer
  words: dict[str, int]
  cache_path: str
  from_cache: bool = False
  name: str = ''

  def stats(self) -> dict:
    """The corpus statistics that `python -m factorized.data` prints."""
    return {
        'corpus': self.name,
        'tokenizer': self.tokenizer.kind,
        'vocab_size': self.vocab_size,
        'tokens': {s: int(ids.size) for s, ids in self.splits.items()},
        'words': dict(self.words),
        'unk_rate': {s: float(np.mean(ids == tokenizer_lib.UNK_ID))
                     for s, ids in self.splits.items()},
        'cache_path': self.cache_path,
        'from_cache': self.from_cache,
    }


def prepare_corpus(data_config, *, run_dir: str | None = None) -> Corpus:
  """Loads (or builds and caches) the tokenised corpus of `data_config` (config.data); with
  `run_dir`, saves or checks the run's tokenizer.json and train_counts.npy there."""
  tok_config = tokenizer_lib.tokenizer_config(data_config)
  counted = corpora.vocab_from(data_config)
  if tok_config['kind'] == 'word' and counted != corpora.corpus(data_config.corpus).vocab_from:
    # Only a vocabulary counted otherwise than the corpus's protocol enters the key, so the
    # cache entries and saved tokenizers of the protocol's own vocabulary keep their keys.
    tok_config['vocab_from'] = counted
  seq_len = data_config.seq_len  # a positive integer (config/build.py validated it)
  root = cache.cache_root(data_config)
  source = corpora.load_source(data_config, root)
  material = {'protocol': PROTOCOL_VERSION, 'source': source.fingerprint,
              'tokenizer': tok_config}
  key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]
  path = root / 'corpora' / f'{data_config.corpus}-{tok_config["kind"]}-{key}'

  saved_path = pathlib.Path(run_dir) / TOKENIZER_FILE if run_dir else None
  saved = None
  if saved_path is not None and saved_path.exists():
    saved = tokenizer_lib.load_tokenizer(saved_path)
    if saved[1].get('corpus_key') != key:
      raise ValueError(
          f'{saved_path} was made for another corpus or tokenizer config (key '
          f'{saved[1].get("corpus_key")}, config {saved[1].get("config")}) than config.data '
          f'gives (key {key}, config {tok_config}): use the data config the run was trained '
          'with, or a fresh workdir.')

  corpus = _read_cache(path, data_config.corpus)
  if corpus is None:
    corpus = _build(source, corpora.vocab_splits(data_config), tok_config, key, path,
                    data_config.corpus, saved[0] if saved else None)
  if saved_path is not None:
    cached_text = (path / TOKENIZER_FILE).read_text(encoding='utf-8')
    if saved is None:
      tokenizer_lib.save_tokenizer(saved_path, cached_text)
    elif saved_path.read_text(encoding='utf-8') != cached_text:
      raise ValueError(
          f'{saved_path} differs from the tokenizer of the cached corpus {path}: the cache was '
          f'rebuilt with another tokenizer. Delete {path} so it is rebuilt with {saved_path}.')
    save_train_counts(run_dir, token_counts(corpus.splits['train'], corpus.vocab_size))

  _check_lengths(corpus, seq_len)
  return corpus


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
  """How often each token id occurs in `tokens`: int64, length vocab_size."""
  return np.bincount(np.asarray(tokens), minlength=vocab_size).astype(np.int64)


def save_train_counts(run_dir: str | os.PathLike, counts_V: np.ndarray) -> None:
  """Writes run_dir/train_counts.npy once; a ValueError if one with other counts is there."""
  path = pathlib.Path(run_dir) / TRAIN_COUNTS_FILE
  counts_V = np.asarray(counts_V, np.int64)
  if path.exists():
    if not np.array_equal(load_train_counts(run_dir), counts_V):
      raise ValueError(f'{path} holds other train-split counts than this corpus gives: the '
                       'corpus changed since the run started. Use its data, or a fresh workdir.')
    return
  buffer = io.BytesIO()
  np.save(buffer, counts_V)
  files.write_atomic(path, buffer.getvalue())


def load_train_counts(run_dir: str | os.PathLike) -> np.ndarray:
  """The train split's count of every token id saved with the run (int64, V)."""
  path = pathlib.Path(run_dir) / TRAIN_COUNTS_FILE
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: it is written when a run prepares its '
                            'corpus (train.py or eval.py on the workdir).')
  return np.load(path)


def _check_lengths(corpus: Corpus, seq_len: int) -> None:
  valid, train = corpus.splits['valid'].size, corpus.splits['train'].size
  if seq_len > valid:
    raise ValueError(f'data.seq_len={seq_len} is longer than the valid split ({valid} tokens): '
                     f'use data.seq_len <= {valid}, or a larger valid split.')
  if seq_len + 1 > train:
    raise ValueError(f'data.seq_len={seq_len} needs at least {seq_len + 1} train tokens; the '
                     f'train split has {train}: lower data.seq_len or add train text.')


def _build(source: corpora.Source, vocab_splits: tuple[str, ...], tok_config: dict, key: str,
           path: pathlib.Path, name: str, tokenizer: tokenizer_lib.Tokenizer | None) -> Corpus:
  """Tokenises the corpus (training the tokenizer, a `word` one on the words of
  `vocab_splits`, unless given) and writes the cache entry."""
  start = time.time()
  splits = source.load()
  if tokenizer is None:
    vocab_batches = itertools.chain.from_iterable(splits[s].read() for s in vocab_splits)
    tokenizer = tokenizer_lib.train_tokenizer(tok_config, vocab_batches, splits['train'].read())
  encoded, words = {}, {}
  for split_name, split in splits.items():
    encoded[split_name], words[split_name] = _encode(tokenizer, split)
  logging.info('Tokenised %s in %.1fs: %s tokens', name, time.time() - start,
               {s: ids.size for s, ids in encoded.items()})
  meta = {'key': key, 'protocol': PROTOCOL_VERSION, 'source': source.fingerprint,
          'tokenizer': tok_config, 'words': words, 'vocab_size': tokenizer.vocab_size}
  text = tokenizer_lib.tokenizer_json(tokenizer, config=tok_config, corpus_key=key)
  _write_cache(path, encoded, text, meta)
  return Corpus(encoded, tokenizer.vocab_size, tokenizer, words, str(path), False, name)


def _encode(tokenizer: tokenizer_lib.Tokenizer, split: corpora.Split) -> tuple[np.ndarray, int]:
  """(ids of the split, whitespace words + <eos>s); errors when it holds no word."""
  chunks, num_words, num_lines = [], 0, 0
  for lines in split.read():
    ids, batch_words = tokenizer.encode_lines(lines)
    chunks.append(ids)
    num_words += batch_words
    num_lines += len(lines)
  if num_words == 0:
    raise ValueError(f'{split.source}: the {split.name} split is empty (no words).')
  ids = np.concatenate(chunks)
  if not split.eos_after_last:  # the cut falls inside a sentence
    ids, num_lines = ids[:-1], num_lines - 1
  return ids, num_words + num_lines


def _write_cache(path: pathlib.Path, splits: dict[str, np.ndarray], tokenizer_text: str,
                 meta: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.'))
  try:
    for name, ids in splits.items():
      np.save(tmp / f'{name}.npy', ids)
    (tmp / TOKENIZER_FILE).write_text(tokenizer_text, encoding='utf-8')
    (tmp / 'meta.json').write_text(json.dumps(meta, indent=1, sort_keys=True), encoding='utf-8')
    os.replace(tmp, path)
  except OSError:
    if not (path / 'meta.json').exists():
      raise
    logging.info('Another process wrote %s first; using it.', path)  # a race: same content
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(path: pathlib.Path, name: str) -> Corpus | None:
  """The cached corpus at `path`, or None when absent or unreadable (then rebuilt)."""
  if not (path / 'meta.json').exists():
    return None
  try:
    meta = json.loads((path / 'meta.json').read_text(encoding='utf-8'))
    splits = {s: np.load(path / f'{s}.npy') for s in SPLITS}
    tokenizer, _ = tokenizer_lib.load_tokenizer(path / TOKENIZER_FILE)
  except (OSError, ValueError) as e:
    logging.warning('Rebuilding the unreadable cache entry %s (%s).', path, e)
    shutil.rmtree(path, ignore_errors=True)
    return None
  logging.info('Loaded the tokenised corpus from the cache %s', path)
  return Corpus(splits, tokenizer.vocab_size, tokenizer, meta['words'], str(path), True, name)


def _check_batching(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} (config.train.batch_size or '
                     f'eval_batch_size) must be a positive multiple of the process count '
                     f'{process_count}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count}).')
  return global_batch_size // process_count


class TrainBatches:
  """Packed, shuffled, resumable train batches: an endless iterator of int32 [B_local, L]."""

  def __init__(self, tokens: np.ndarray, *, seq_len: int, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    self.local_batch_size = _check_batching(global_batch_size, process_index, process_count)
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    if tokens.ndim != 1 or tokens.size < seq_len + 1:
      raise ValueError(f'data.seq_len={seq_len} needs at least {seq_len + 1} train tokens; '
                       f'got {tokens.size}.')
    # Row i is tokens[i*L : i*L + L + 1]: a strided view, no copy.
    self._rows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)[::seq_len]
    self.rows_per_epoch = self._rows.shape[0]
    self.global_batch_size, self.seed = global_batch_size, seed
    self._first = process_index * self.local_batch_size
    self._epoch, self._index, self._perms = 0, 0, {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
          self.rows_per_epoch)
    return self._perms[epoch]

  def __iter__(self) -> TrainBatches:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    pieces, need = [], self.global_batch_size
    while need:
      take = min(need, self.rows_per_epoch - self._index)
      pieces.append(self._permutation(self._epoch)[self._index:self._index + take])
      need -= take
      self._index += take
      if self._index == self.rows_per_epoch:
        self._epoch, self._index = self._epoch + 1, 0
    rows_B = np.concatenate(pieces)[self._first:self._first + self.local_batch_size]
    batch_BxL1 = self._rows[rows_B]
    return {'inputs': np.ascontiguousarray(batch_BxL1[:, :-1]),
            'targets': np.ascontiguousarray(batch_BxL1[:, 1:])}

  @property
  def epoch(self) -> float:
    """Epochs done, fractional."""
    return self._epoch + self._index / self.rows_per_epoch

  def get_state(self) -> dict:
    """The position: a small JSON-able dict for the checkpoint."""
    return {'epoch': self._epoch, 'index': self._index, 'rows_per_epoch': self.rows_per_epoch}

  def set_state(self, state: dict) -> None:
    """Restores a position from `get_state`; the next batch is the one that came next."""
    if state.get('rows_per_epoch', self.rows_per_epoch) != self.rows_per_epoch:
      raise ValueError(
          f'The checkpointed data position is for {state["rows_per_epoch"]} rows per epoch, '
          f'this corpus packs {self.rows_per_epoch}: config.data (corpus, tokenizer or '
          'seq_len) changed since the checkpoint.')
    epoch, index = int(state['epoch']), int(state['index'])
    if epoch < 0 or not 0 <= index < self.rows_per_epoch:
      raise ValueError(f'Bad data position {state}.')
    self._epoch, self._index = epoch, index


def _window_starts(num_tokens: int, seq_len: int, stride: int) -> np.ndarray:
  if not isinstance(stride, (int, np.integer)) or not 1 <= stride <= seq_len:
    raise ValueError(f'--stride={stride!r} must be an integer in [1, data.seq_len={seq_len}].')
  num_windows = 1 + math.ceil(max(0, num_tokens - seq_len) / stride) if num_tokens else 0
  return np.arange(num_windows) * stride


def num_eval_batches(num_tokens: int, *, seq_len: int, global_batch_size: int,
                     stride: int | None = None) -> int:
  """How many batches `eval_batches` yields for a split of `num_tokens` tokens."""
  windows = _window_starts(num_tokens, seq_len, seq_len if stride is None else stride).size
  return math.ceil(windows / global_batch_size)


def eval_batches(tokens: np.ndarray, *, seq_len: int, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, stride: int | None = None,
                 eos_id: int = tokenizer_lib.EOS_ID) -> Iterator[dict[str, np.ndarray]]:
  """Batches covering every token of `tokens` as a target once (windows every `stride`
  tokens, default seq_len; see the module docstring); padding has mask 0."""
  local = _check_batching(global_batch_size, process_index, process_count)
  stride = seq_len if stride is None else stride
  tokens = np.asarray(tokens, dtype=np.int32)
  starts_W = _window_starts(tokens.size, seq_len, stride)
  num_batches = num_eval_batches(tokens.size, seq_len=seq_len,
                                 global_batch_size=global_batch_size, stride=stride)
  windows = num_batches * global_batch_size
  positions_WxL = np.full((windows, seq_len), tokens.size, np.int64)  # past the end: padding
  positions_WxL[:starts_W.size] = starts_W[:, None] + np.arange(seq_len)
  # inputs[j] = tokens[j - 1] (<eos> before the first); a zero after the end pads.
  stream = np.concatenate([[eos_id], tokens, np.zeros(1, np.int32)]).astype(np.int32)
  padded = np.minimum(positions_WxL, tokens.size)
  scored_WxL = positions_WxL < tokens.size
  scored_WxL[1:, :seq_len - stride] = False  # later windows score only their last S targets
  arrays = (('inputs', stream[padded]), ('targets', stream[padded + 1]),
            ('mask', scored_WxL.astype(np.float32)))
  shape = (num_batches, global_batch_size, seq_len)
  first = process_index * local
  # A generator expression, so that the checks above run at the call, not at the first batch.
  return ({name: array.reshape(shape)[b, first:first + local] for name, array in arrays}
          for b in range(num_batches))


def validate_band_edges(edges, field: str = 'eval.band_edges') -> list[int]:
  """The edges as a list; a ValueError naming `field` unless increasing and > 0."""
  if (not isinstance(edges, (tuple, list)) or not edges
      or not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in edges)
      or any(b <= a for a, b in itertools.pairwise([0, *edges]))):
    example = '(100, 1000, 10000)' if field == 'eval.band_edges' else '(1, 4, 11, 101)'
    raise ValueError(f'{field}={edges!r} must be increasing positive integers, e.g. '
                     f"--config.{field}='{example}'.")
  return [int(edge) for edge in edges]


def _range_names(edges: list[int], first: int) -> list[str]:
  """'lo-hi' (or 'lo' alone) for each range [lo, next edge) from `first`, then 'last+'."""
  names = [f'{lo}' if hi - 1 == lo else f'{lo}-{hi - 1}'
           for lo, hi in itertools.pairwise([first, *edges])]
  return [*names, f'{edges[-1]}+']


def frequency_bands(counts_V: np.ndarray, edges: tuple[int, ...] | list[int]
                    ) -> tuple[np.ndarray, list[str]]:
  """The band of every token id (int32 V) and the bands' names, from train-split counts."""
  edges = validate_band_edges(edges)
  vocab_size = len(counts_V)
  order_V = frequency.frequency_order(counts_V)
  order_V = order_V[order_V != tokenizer_lib.UNK_ID]
  rank_V = np.empty(vocab_size, np.int64)
  rank_V[order_V] = np.arange(1, order_V.size + 1)
  band_V = np.searchsorted(np.asarray(edges), rank_V, side='left').astype(np.int32)
  names = _range_names([edge + 1 for edge in edges], 1)
  band_V[tokenizer_lib.UNK_ID] = len(names)
  return band_V, [*names, '<unk>']


def frequency_classes(counts_V: np.ndarray, edges: tuple[int, ...] | list[int]
                      ) -> tuple[np.ndarray, list[str]]:
  """The frequency class of every token id (int32 V) and the classes' names: how often its
  type occurs in the train split, cut at `edges` (eval.count_edges: (1, 4, 11, 101) gives
  0, 1-3, 4-10, 11-100 and 101+ train occurrences); <unk> is a class of its own."""
  edges = validate_band_edges(edges, 'eval.count_edges')
  class_V = np.searchsorted(np.asarray(edges), np.asarray(counts_V), side='right')
  class_V = class_V.astype(np.int32)
  names = _range_names(edges, 0)
  class_V[tokenizer_lib.UNK_ID] = len(names)
  return class_V, [*names, '<unk>']


def frequent_classes(edges: tuple[int, ...] | list[int], min_count: int) -> list[str]:
  """The names of frequency_classes(counts, edges) whose types occur >= `min_count` times in
  the train split (eval.frequent_count, one of the edges): the frequent types."""
  edges = validate_band_edges(edges, 'eval.count_edges')
  if min_count not in edges:
    raise ValueError(f'eval.frequent_count={min_count!r} must be one of eval.count_edges '
                     f'{tuple(edges)}, where a frequency class begins.')
  return _range_names(edges, 0)[edges.index(min_count) + 1:]

