"""ptb: the Penn Treebank of Mikolov et al. (2010, 2011), the standard small LM benchmark,
read from `data.path`, the folder holding `ptb.train.txt`, `ptb.valid.txt` and
`ptb.test.txt` as distributed with the RNNLM toolkit.

Protocol (the published one, so that perplexities compare with the literature): the text is
already lower-cased, numbers are `N` and rare words `<unk>`; each line is one sentence,
with one `<eos>` after it; the vocabulary is every type of the train split plus `<eos>`
(10,000 for the published files: no frequency cut and no size cap, so `data.min_freq` must
be <= 1 and `data.vocab_size` 0, else the run is refused naming the field); valid and test
words outside it become `<unk>` (the published files have none). With `<eos>`, the
published files hold 929,589 / 73,760 / 82,430 tokens.
"""

from __future__ import annotations

import pathlib

from factorized.data.corpora.base import SPLITS, Source, register
from factorized.data.corpora.text import text_source

FILES = {name: f'ptb.{name}.txt' for name in SPLITS}


def split_files(data_config, corpus: str, files: dict[str, str]) -> dict[str, list[str]]:
  """{split: [data.path/<file>]}; a FileNotFoundError naming data.path and the file."""
  folder = data_config.get('path', '')
  if not folder:
    raise ValueError(f'data.path is empty: data.corpus={corpus} needs the folder holding '
                     f'{", ".join(files.values())}, e.g. --config.data.path=/data/{corpus}.')
  paths = {}
  for name, file in files.items():
    path = pathlib.Path(folder).expanduser() / file
    if not path.is_file():
      raise FileNotFoundError(f'data.path={folder}: no {file} there; data.corpus={corpus} '
                              f'reads {", ".join(files.values())} from that folder.')
    paths[name] = [str(path)]
  return paths


@register('ptb', fields={'path': ''}, fixed_vocabulary=True)
def source(data_config, root: pathlib.Path) -> Source:
  """The three files of data.path, one <eos> a line, the vocabulary from train."""
  files = split_files(data_config, 'ptb', FILES)
  return text_source(files, root / 'hf_datasets', corpus='ptb',
                     fields={name: 'path' for name in SPLITS})
