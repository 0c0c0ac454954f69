"""wikitext: WikiText-2 or WikiText-103 (Merity et al. 2017) read from `data.path`, the
folder holding the published files of one of them: `wiki.train.tokens`, `wiki.valid.tokens`
and `wiki.test.tokens` (word level), or with `data.wikitext_raw=True` the raw variant
`wiki.{train,valid,test}.raw` (untokenised text, for subwords: `data.tokenizer=bpe`).

Protocol (the published one): every line, blank lines and section headings included, is
one row with one `<eos>` after it; word level, `<unk>` is already in the text and the
vocabulary is every type of the train split plus `<eos>` (33,278 for WikiText-2, 267,735
for WikiText-103: `data.min_freq` must be <= 1 and `data.vocab_size` 0, else the run is
refused naming the field); valid and test words outside it become `<unk>`. The published
WikiText-2 files hold 2,088,628 / 217,646 / 245,569 tokens with `<eos>`. The raw variant
with `bpe` trains its merges on the train split; its word-level perplexity divides the
same total NLL by the word count (data/pipeline.py).
"""

from __future__ import annotations

import pathlib

from factorized.data.corpora.base import SPLITS, Source, register
from factorized.data.corpora.ptb import split_files
from factorized.data.corpora.text import text_source


def files(raw: bool) -> dict[str, str]:
  return {name: f'wiki.{name}.{"raw" if raw else "tokens"}' for name in SPLITS}


@register('wikitext', fields={'path': '', 'wikitext_raw': False}, fixed_vocabulary=True)
def source(data_config, root: pathlib.Path) -> Source:
  """The three files of data.path (tokens or raw), one <eos> a line."""
  raw = bool(data_config.get('wikitext_raw', False))
  if raw and data_config.tokenizer != 'bpe':
    raise ValueError('data.wikitext_raw=True reads untokenised text: use it with '
                     '--config.data.tokenizer=bpe (and a data.vocab_size, e.g. 8000), or '
                     'the word-level wiki.*.tokens files with data.wikitext_raw=False.')
  paths = split_files(data_config, 'wikitext', files(raw))
  return text_source(paths, root / 'hf_datasets', corpus='wikitext-raw' if raw else 'wikitext',
                     fields={name: 'path' for name in SPLITS})
