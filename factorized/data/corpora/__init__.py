r"""Corpora as plug-ins: where the text comes from, as train / valid / test lines.

A corpus is one module of this package, named after it, picked by `data.corpus`; adding a
corpus is adding its file (and its tests) and its line below (tests/test_docs.py checks the
lines against `CORPORA`). Each holds its protocol (the module docstring), its own `data.*`
fields and a `source(data_config, cache_root) -> Source` registered with `base.register`:

  brown     Bengio et al. 2003's Brown protocol (the default)     brown.py
  text      the user's UTF-8 files, one <eos> a line              text.py
  hf        a Hugging Face dataset (hub name or save_to_disk)     hf.py
  ptb       Mikolov's Penn Treebank files, fixed vocabulary       ptb.py
  wikitext  WikiText-2/-103 (tokens, or raw text with BPE)        wikitext.py

Every corpus is handed on as a `Source`: three `Split`s that yield batches of lines, and a
JSON-able fingerprint of the text (checksums) that keys the tokenisation cache (data/pipeline.py).
"""

from __future__ import annotations

import pathlib

from factorized import plugins
from factorized.data.corpora import base
from factorized.data.corpora.base import *  # noqa: F403 (the facade: base.__all__)
from factorized.data.corpora.base import Source, corpus, names

plugins.import_all(__name__, __path__)  # noqa: F405 (every module registers itself)

from factorized.data.corpora.brown import find_brown  # noqa: E402

CORPORA = names()


def load_source(data_config, root: pathlib.Path) -> Source:
  """The `Source` of `data.corpus`: checksums now, the text only once `load()` is called.
  (A `data.vocab_size` or `min_freq` the corpus refuses was refused by config/build.py.)"""
  return corpus(data_config.corpus).source(data_config, root)


__all__ = ['CORPORA', *base.__all__, 'find_brown', 'load_source']  # noqa: F405
