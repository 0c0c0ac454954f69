"""What every corpus shares: `Split`, `Source`, the registry and the cache directory.

A corpus is one module of this package, `factorized/data/corpora/<name>.py`: its protocol (the
module docstring), its own `data.*` config fields with their defaults, and a function
`source(data_config, cache_root) -> Source` registered with `@register(name, ...)`. A corpus
whose published protocol fixes the word vocabulary (`fixed_vocabulary=True`: ptb, wikitext)
refuses a `data.min_freq` or `data.vocab_size` that would change it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ['EOS', 'SPLITS', 'Corpus', 'Source', 'Split', 'batches', 'cache_root',
           'check_vocabulary', 'config_fields', 'corpus', 'names', 'register']

SPLITS = ('train', 'valid', 'test')
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
  """A corpus: its fingerprint (checksums, JSON-able), `load()` -> its three `Split`s, and the
  splits whose words the `word` vocabulary counts."""
  fingerprint: dict
  load: Callable[[], dict[str, Split]]
  vocab_splits: tuple[str, ...] = ('train',)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A registered corpus: `source(data_config, cache_root) -> Source`, its own data.* fields
  and defaults, and whether its protocol fixes the word vocabulary."""
  name: str
  source: Callable[[Any, pathlib.Path], Source]
  fields: dict[str, Any]
  fixed_vocabulary: bool


_REGISTRY: dict[str, Corpus] = {}


def register(name: str, *, fields: dict[str, Any] | None = None, fixed_vocabulary: bool = False):
  """Decorator: registers `source(data_config, cache_root) -> Source` as corpus `name`."""

  def add(source: Callable[[Any, pathlib.Path], Source]):
    if name in _REGISTRY:
      raise ValueError(f'Two corpora are named {name!r}.')
    _REGISTRY[name] = Corpus(name, source, dict(fields or {}), fixed_vocabulary)
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


def check_vocabulary(data_config) -> None:
  """A ValueError naming the field when a corpus with a fixed word vocabulary is given a
  data.min_freq or data.vocab_size that would change it."""
  entry = corpus(data_config.corpus)
  if not entry.fixed_vocabulary or data_config.tokenizer != 'word':
    return
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


def cache_root(data_config) -> pathlib.Path:
  """data.cache_dir, else $FACTORIZED_CACHE_DIR, else ~/.cache/factorized."""
  root = data_config.get('cache_dir', '') or os.environ.get('FACTORIZED_CACHE_DIR', '')
  return pathlib.Path(root or '~/.cache/factorized').expanduser()


def batches(lines: list[str]) -> Iterator[list[str]]:
  """`lines` in batches of LINES_PER_BATCH (a Split's `read`)."""
  for start in range(0, len(lines), LINES_PER_BATCH):
    yield lines[start:start + LINES_PER_BATCH]
