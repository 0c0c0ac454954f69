"""ptb and wikitext: the published files' formats and protocol, on small generated files."""

import numpy as np
import pytest

from configs import lm
from factorized.config import build
from factorized.data import pipeline as data
from factorized.data import tokenizer
from factorized.train import trainer

# Mikolov's PTB: lower case, N for numbers, <unk> already in the text, a leading space and
# one sentence a line.
PTB = {
    'train': ' the cat sat on the mat \n the <unk> sat N times \n a dog ran \n',
    'valid': ' the dog sat \n a zebra ran \n',
    'test': ' the cat ran N \n',
}
# WikiText: headings, blank lines, @-@ joins and <unk> in the .tokens files.
WIKI = {
    'train': ' \n = Valkyria = \n \n The game began in 2011 . \n It was <unk> @-@ made . \n',
    'valid': ' \n = Plot = \n The game was made . \n',
    'test': ' The game ended . \n',
}


def write(folder, names, texts):
  folder.mkdir(parents=True, exist_ok=True)
  for split, text in texts.items():
    (folder / names[split]).write_text(text)
  return folder


def config(tmp_path, corpus, folder, *args, **overrides):
  config = lm.get_config(','.join([f'corpus={corpus}', *args]))
  config.data.update(path=str(folder), cache_dir=str(tmp_path / 'cache'), seq_len=4, **overrides)
  return config


def test_ptb_vocabulary_is_every_train_type_plus_eos_and_one_eos_a_line(tmp_path):
  folder = write(tmp_path / 'ptb', {s: f'ptb.{s}.txt' for s in PTB}, PTB)
  corpus = data.prepare_corpus(config(tmp_path, 'ptb', folder).data)
  train_types = {word for line in PTB['train'].splitlines() for word in line.split()}
  # The train types (<unk> among them: the special id 0) plus <eos>: no frequency cut.
  assert corpus.vocab_size == len(train_types | {'<eos>'}) == 12
  decode = corpus.tokenizer.decode
  assert decode(corpus.splits['train']) == (
      'the cat sat on the mat <eos> the <unk> sat N times <eos> a dog ran <eos>')
  assert decode(corpus.splits['valid']) == 'the dog sat <eos> a <unk> ran <eos>'  # zebra
  assert int(np.sum(corpus.splits['test'] == tokenizer.EOS_ID)) == 1


def test_runlocal_leaves_a_fixed_vocabulary_alone_and_a_change_is_refused(tmp_path):
  folder = write(tmp_path / 'ptb', {s: f'ptb.{s}.txt' for s in PTB}, PTB)
  local = config(tmp_path, 'ptb', folder, 'runlocal')
  assert local.data.vocab_size == 0 and local.data.min_freq == 1
  assert data.prepare_corpus(local.data).vocab_size == 12
  with pytest.raises(ValueError, match=r"data.min_freq=4 would change the vocabulary that "
                                       r"data.corpus='ptb' fixes .*--config.data.min_freq=1"):
    build.from_config(config(tmp_path, 'ptb', folder, min_freq=4))
  with pytest.raises(ValueError, match=r'data.vocab_size=2000 would cap .*vocab_size=0'):
    build.from_config(config(tmp_path, 'ptb', folder, vocab_size=2000))


def test_a_missing_folder_or_file_names_data_path(tmp_path):
  with pytest.raises(ValueError, match=r'data.path is empty: data.corpus=ptb needs the folder '
                                       r'holding ptb.train.txt'):
    data.prepare_corpus(config(tmp_path, 'ptb', '').data)
  folder = write(tmp_path / 'ptb', {'train': 'ptb.train.txt', 'valid': 'ptb.valid.txt'},
                 {'train': PTB['train'], 'valid': PTB['valid']})
  with pytest.raises(FileNotFoundError, match=rf'data.path={folder}: no ptb.test.txt there'):
    data.prepare_corpus(config(tmp_path, 'ptb', folder).data)


def test_wikitext_tokens_keep_blank_lines_and_headings_one_eos_each(tmp_path):
  folder = write(tmp_path / 'wt2', {s: f'wiki.{s}.tokens' for s in WIKI}, WIKI)
  corpus = data.prepare_corpus(config(tmp_path, 'wikitext', folder).data)
  lines = WIKI['train'].splitlines()
  assert int(np.sum(corpus.splits['train'] == tokenizer.EOS_ID)) == len(lines) == 5
  types = {word for line in lines for word in line.split()}
  assert corpus.vocab_size == len(types | {'<eos>'})
  assert corpus.tokenizer.decode(corpus.splits['valid']).startswith('<eos> = <unk> = <eos>')


def test_wikitext_raw_needs_bpe_and_trains_it_on_the_raw_train_split(tmp_path):
  raw = {split: text.replace(' @-@ ', '-') for split, text in WIKI.items()}
  folder = write(tmp_path / 'wt2raw', {s: f'wiki.{s}.raw' for s in raw}, raw)
  with pytest.raises(ValueError, match=r'data.wikitext_raw=True reads untokenised text: use '
                                       r'it with --config.data.tokenizer=bpe'):
    data.prepare_corpus(config(tmp_path, 'wikitext', folder, wikitext_raw=True).data)
  corpus = data.prepare_corpus(config(tmp_path, 'wikitext', folder, wikitext_raw=True,
                                      tokenizer='bpe', vocab_size=300).data)
  assert 258 < corpus.vocab_size <= 300  # the specials, the bytes, the merges found
  assert 'made' in corpus.tokenizer.decode(corpus.splits['train'])
  assert corpus.words['test'] == 5  # 4 words and an <eos>: word-level perplexity's count


def test_a_model_trains_on_ptb(tmp_path):
  folder = write(tmp_path / 'ptb', {s: f'ptb.{s}.txt' for s in PTB}, PTB)
  run = config(tmp_path, 'ptb', folder, 'runlocal', 'kind=svd', 'rank=4')
  run.data.seq_len = 4
  run.train.update(num_steps=4, batch_size=8, eval_batch_size=8, warmup_steps=1,
                   eval_every=4, ckpt_every=4, log_every=2)
  summary = trainer.train_and_evaluate(build.from_config(run), str(tmp_path / 'run'))
  assert summary['vocab_size'] == 12 and np.isfinite(summary['test_ppl'])
