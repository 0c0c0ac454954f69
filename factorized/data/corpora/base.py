"""What every corpus shares: `Split`, `Source`, the registry and the cache directory.

A corpus is one module of this package, `factorized/data/corpora/<name>.py`: its protocol (the
module docstring), its own `data.*` config fields with their defaults, and a function
`source(data_config, cache_root) -> Source` registered with `@register(name, ...)`. A corpus
whose published protocol fixes the word vocabulary (`fixed_vocabulary=True`: ptb, wikitext)
refuses a `data.min_freq`, `data.vocab_size` or `data.vocab_from` that would change it.

`data.vocab_from` says which splits the `word` vocabulary is counted over: `train` (the
train split alone, as PTB and WikiText do: a word of valid or test only is `<unk>`) or `all`
(the three splits, as Bengio et al. 2003 did on Brown). Each corpus registers its protocol's
choice (`vocab_from=`), the config's default.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ['EOS', 'SPLITS', 'Corpus', 'Source', 'Split', 'batches', 'check_vocabulary',
           'config_fields', 'corpus', 'names', 'register', 'vocab_from', 'vocab_splits']

SPLITS = ('train', 'valid', 'test')
VOCAB_FROM = {'train': ('train',), 'all': SPLITS}  # data.vocab_from: the splits counted
EOS = '<eos>'
LINES_PER_BATCH = 10_000


@dataclasses.dataclass(frozen=True)
class Split:
  """One split's text: `read()` yields its lines in batches; `source` names it in errors."""
  name: str
  source: str
  read: Callable[[], Iterator[list[str]]]
  eos_after_last: bool = True  # False where a cut falls inside a sentence (brown)


@dataclasses.dataclass(frozen=True)
class Source:
  """A corpus: its fingerprint (checksums, JSON-able) and `load()` -> its three `Split`s."""
  fingerprint: dict
  load: Callable[[], dict[str, Split]]


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A registered corpus: `source(data_config, cache_root) -> Source`, its own data.* fields
  and defaults, whether its protocol fixes the word vocabulary, and the splits its protocol
  counts the word vocabulary over (`vocab_from`: train | all)."""
  name: str
  source: Callable[[Any, pathlib.Path], Source]
  fields: dict[str, Any]
  fixed_vocabulary: bool
  vocab_from: str = 'train'


_REGISTRY: dict[str, Corpus] = {}


def register(name: str, *, fields: dict[str, Any] | None = None, fixed_vocabulary: bool = False,
             vocab_from: str = 'train'):
  """Decorator: registers `source(data_config, cache_root) -> Source` as corpus `name`."""
  if vocab_from not in VOCAB_FROM:
    raise ValueError(f'vocab_from={vocab_from!r} is not one of {"|".join(VOCAB_FROM)}.')

  def add(source: Callable[[Any, pathlib.Path], Source]):
    if name in _REGISTRY:
      raise ValueError(f'Two corpora are named {name!r}.')
    _REGISTRY[name] = Corpus(name, source, dict(fields or {}), fixed_vocabulary, vocab_from)
    return source

  return add


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def corpus(name: str) -> Corpus:
  """The registered corpus `name`; a ValueError naming data.corpus otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f'data.corpus={name!r} is unknown; allowed: {"|".join(_REGISTRY)}.')
  return _REGISTRY[name]


def config_fields() -> dict[str, Any]:
  """Every corpus's own data.* fields with their defaults (the configs add them)."""
  return {field: default for entry in _REGISTRY.values() for field, default in entry.fields.items()}


def vocab_from(data_config: Mapping[str, Any]) -> str:
  """data.vocab_from, or the corpus protocol's choice where it is '' (or absent): of a
  config's data section (a Spec, a ConfigDict or a saved config's dict)."""
  return data_config.get('vocab_from', '') or corpus(data_config['corpus']).vocab_from


def vocab_splits(data_config) -> tuple[str, ...]:
  """The splits whose words the `word` vocabulary counts (data.vocab_from)."""
  return VOCAB_FROM[vocab_from(data_config)]


def check_vocabulary(data_config) -> None:
  """A ValueError naming the field when data.vocab_from is not train|all, or when a corpus
  with a fixed word vocabulary is given a data.min_freq, data.vocab_size or data.vocab_from
  that would change it."""
  entry = corpus(data_config.corpus)
  counted = vocab_from(data_config)
  if counted not in VOCAB_FROM:
    raise ValueError(f'data.vocab_from={counted!r} is not one of {"|".join(VOCAB_FROM)}: '
                     'train counts the vocabulary over the train split alone, all over the '
                     'three splits.')
  if not entry.fixed_vocabulary or data_config.tokenizer != 'word':
    return
  if counted != entry.vocab_from:
    raise ValueError(
        f'data.vocab_from={counted!r} would change the vocabulary that '
        f'data.corpus={entry.name!r} fixes (counted over its {entry.vocab_from} split(s)); '
        f'set --config.data.vocab_from={entry.vocab_from}.')
  if data_config.min_freq > 1:
    raise ValueError(
        f'data.min_freq={data_config.min_freq} would change the vocabulary that '
        f'data.corpus={entry.name!r} fixes (every type of its train split, plus <eos>); set '
        '--config.data.min_freq=1.')
  if data_config.vocab_size:
    raise ValueError(
        f'data.vocab_size={data_config.vocab_size} would cap the vocabulary that '
        f'data.corpus={entry.name!r} fixes (every type of its train split, plus <eos>); set '
        '--config.data.vocab_size=0.')


def batches(lines: list[str]) -> Iterator[list[str]]:
  """`lines` in batches of LINES_PER_BATCH (a Split's `read`)."""
  for start in range(0, len(lines), LINES_PER_BATCH):
    yield lines[start:start + LINES_PER_BATCH]
