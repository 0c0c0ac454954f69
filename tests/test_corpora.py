"""Corpora: the Brown protocol on the real file, its download, text and hf loading, bad input."""

import functools
import http.server
import socket
import threading

import numpy as np
import pytest

from configs import brown
from factorized.data import corpora
from factorized.data import pipeline as data


def data_config(tmp_path, **overrides):
  config = brown.get_config('runlocal').data
  config.update(vocab_size=0, min_freq=1, seq_len=4, cache_dir=str(tmp_path / 'cache'))
  config.update(overrides)
  return config


# --- brown -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def brown_corpus(brown_zip, tmp_path_factory):
  cache = tmp_path_factory.mktemp('brown_cache')
  return data.prepare_corpus(data_config(cache, corpus='brown', min_freq=4))


def test_brown_protocol_split_sizes_and_vocabulary(brown_corpus):
  stats = brown_corpus.stats()
  assert stats['tokens'] == {'train': 800_000, 'valid': 200_000, 'test': 218_532}
  assert stats['words'] == stats['tokens']  # word tokenizer: one token per word or <eos>
  assert stats['vocab_size'] == 17_906
  assert stats['unk_rate'] == pytest.approx(
      {'train': 0.047961, 'valid': 0.040315, 'test': 0.040040}, abs=1e-6)
  eos = [int(np.sum(ids == 1)) for ids in brown_corpus.splits.values()]
  assert eos == [34_151, 10_052, 13_137]  # 57,340 sentences; the cuts fall inside two


def test_brown_train_vocabulary_gives_no_valid_or_test_only_type_an_id(brown_corpus,
                                                                        tmp_path):
  # Bengio's protocol (the default) counts the three splits: types the train split never
  # shows still get ids. data.vocab_from=train counts train alone, as PTB and WikiText do.
  counts_all = data.token_counts(brown_corpus.splits['train'], brown_corpus.vocab_size)
  assert int(np.sum(counts_all == 0)) > 800  # valid- or test-only types with an id
  train_only = data.prepare_corpus(data_config(tmp_path, corpus='brown', min_freq=4,
                                               vocab_from='train'))
  counts = data.token_counts(train_only.splits['train'], train_only.vocab_size)
  assert train_only.vocab_size < brown_corpus.vocab_size
  assert train_only.cache_path != brown_corpus.cache_path
  unk = 0  # <unk>; <eos> (id 1) occurs in train
  words = np.arange(train_only.vocab_size) != unk
  assert counts[words].min() >= 4  # every word with an id is seen >= min_freq times in train
  for split in ('valid', 'test'):
    assert np.isin(train_only.splits[split], np.flatnonzero(counts)).all()
  # The same words, counted alike, give the same train ids' text.
  decode_all, decode_train = brown_corpus.tokenizer.decode, train_only.tokenizer.decode
  assert decode_all(brown_corpus.splits['train'][:50]).split()[:3] == (
      decode_train(train_only.splits['train'][:50]).split()[:3])


def test_the_saved_config_records_which_splits_the_vocabulary_counts():
  from configs import lm
  from factorized.config import build

  assert build.from_config(brown.get_config()).data.vocab_from == 'all'
  assert build.from_config(lm.get_config('corpus=text')).data.vocab_from == 'train'
  config = brown.get_config()
  config.data.vocab_from = 'train'
  assert build.from_config(config).data.vocab_from == 'train'
  config.data.vocab_from = 'test'
  with pytest.raises(ValueError, match=r'^data\.vocab_from=\'test\' is not one of train\|all'):
    build.from_config(config)
  # A config saved before the field existed computed the protocol's vocabulary.
  saved = brown.get_config().to_dict()
  del saved['data']['vocab_from']
  assert build.from_config(saved).data.vocab_from == 'all'


def test_brown_first_and_last_tokens_of_each_split(brown_corpus):
  decode = brown_corpus.tokenizer.decode
  ends = {s: (decode(ids[:4]), decode(ids[-4:])) for s, ids in brown_corpus.splits.items()}
  assert ends == {
      'train': ('The Fulton County Grand', "`` few '' at"),
      'valid': ('the same time .', 'try to stop me'),
      'test': (", either '' .", 'was <unk> . <eos>'),
  }


def test_corrupt_brown_file_is_refused(tmp_path, monkeypatch):
  monkeypatch.setenv('FACTORIZED_DATA_DIR', str(tmp_path))
  (tmp_path / 'brown.zip').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match=r'brown\.zip is not NLTK.*md5'):
    corpora.find_brown(tmp_path / 'cache', url='http://127.0.0.1:9/unused')


def _serve(directory):
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


@pytest.fixture
def no_proxy(monkeypatch):
  for name in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy',
               'ALL_PROXY'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.delenv('FACTORIZED_DATA_DIR', raising=False)


def test_brown_download_from_a_local_server(brown_zip, tmp_path, no_proxy):
  served = tmp_path / 'served'
  served.mkdir()
  (served / 'brown.zip').write_bytes(brown_zip.read_bytes())
  server = _serve(served)
  try:
    url = f'http://127.0.0.1:{server.server_port}/brown.zip'
    path = corpora.find_brown(tmp_path / 'cache', url=url)
  finally:
    server.shutdown()
  assert path == tmp_path / 'cache' / 'brown.zip'
  assert path.read_bytes() == brown_zip.read_bytes()
  assert [p.name for p in path.parent.iterdir()] == ['brown.zip']  # no temporary left
  # Now found in the cache directory: the (dead) address is not used again.
  assert corpora.find_brown(tmp_path / 'cache', url=url) == path


def test_corrupt_download_is_refused_and_not_written(tmp_path, no_proxy):
  served = tmp_path / 'served'
  served.mkdir()
  (served / 'brown.zip').write_bytes(b'x' * 1000)
  server = _serve(served)
  try:
    url = f'http://127.0.0.1:{server.server_port}/brown.zip'
    with pytest.raises(ValueError, match=r'(?s)corrupt.*FACTORIZED_DATA_DIR'):
      corpora.find_brown(tmp_path / 'cache', url=url)
  finally:
    server.shutdown()
  assert list((tmp_path / 'cache').iterdir()) == []


def test_offline_error_says_where_to_put_the_file(tmp_path, no_proxy):
  with socket.socket() as sock:  # a port nobody listens on
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  with pytest.raises(FileNotFoundError, match=r'(?s)FACTORIZED_DATA_DIR.*put brown\.zip.*cache'):
    corpora.find_brown(tmp_path / 'cache', url=f'http://127.0.0.1:{port}/brown.zip')


# --- text and hf -----------------------------------------------------------------------------

TEXT = {'train': 'a b c\n\nb c a a\nc a\n', 'valid': 'a b\nz a\n', 'test': 'c c b\n'}


def write_text(tmp_path):
  paths = {}
  for split, text in TEXT.items():
    paths[split] = tmp_path / f'{split}.txt'
    paths[split].write_text(text)
  return paths


def text_config(tmp_path, paths, **overrides):
  files = {f'{s}_files': str(p) for s, p in paths.items()}
  return data_config(tmp_path, corpus='text', **files, **overrides)


def test_text_corpus_one_eos_per_line_blank_lines_included(tmp_path):
  corpus = data.prepare_corpus(text_config(tmp_path, write_text(tmp_path)))
  decode = corpus.tokenizer.decode
  assert decode(corpus.splits['train']) == 'a b c <eos> <eos> b c a a <eos> c a <eos>'
  assert decode(corpus.splits['valid']) == 'a b <eos> <unk> a <eos>'  # vocabulary from train
  assert corpus.words == {'train': 13, 'valid': 6, 'test': 4}
  assert corpus.stats()['unk_rate']['valid'] == pytest.approx(1 / 6)


def test_text_globs_are_sorted_and_comma_separated(tmp_path):
  paths = write_text(tmp_path)
  (tmp_path / 'more').mkdir()
  (tmp_path / 'more' / 'x2.txt').write_text('b b\n')
  (tmp_path / 'more' / 'x1.txt').write_text('a a\n')
  config = text_config(tmp_path, paths)
  config.train_files = f'{paths["train"]},{tmp_path}/more/*.txt'
  corpus = data.prepare_corpus(config)
  assert corpus.tokenizer.decode(corpus.splits['train'][-6:]) == 'a a <eos> b b <eos>'


def test_hf_corpus_from_a_saved_dataset_matches_text(tmp_path):
  import datasets

  rows = {s: text.split('\n')[:-1] for s, text in TEXT.items()}
  saved = datasets.DatasetDict({
      hf: datasets.Dataset.from_dict({'body': rows[s], 'id': list(range(len(rows[s])))})
      for s, hf in (('train', 'train'), ('valid', 'validation'), ('test', 'test'))})
  saved.save_to_disk(str(tmp_path / 'saved'))
  hf = data.prepare_corpus(data_config(tmp_path, corpus='hf', hf_name=str(tmp_path / 'saved'),
                                       text_column='body'))
  text = data.prepare_corpus(text_config(tmp_path, write_text(tmp_path)))
  for split in corpora.SPLITS:
    assert np.array_equal(hf.splits[split], text.splits[split])
  with pytest.raises(ValueError, match=r"data\.text_column='id'"):
    data.prepare_corpus(data_config(tmp_path, corpus='hf', hf_name=str(tmp_path / 'saved'),
                                    text_column='id'))
  with pytest.raises(ValueError, match=r"data\.hf_valid_split='dev' .*validation"):
    data.prepare_corpus(data_config(tmp_path, corpus='hf', hf_name=str(tmp_path / 'saved'),
                                    text_column='body', hf_valid_split='dev'))


def test_missing_file_and_unset_field_are_named(tmp_path):
  paths = write_text(tmp_path)
  paths['valid'] = tmp_path / 'nope*.txt'
  with pytest.raises(FileNotFoundError, match=r'data\.valid_files: no file matches'):
    data.prepare_corpus(text_config(tmp_path, paths))
  config = text_config(tmp_path, write_text(tmp_path))
  config.test_files = ''
  with pytest.raises(ValueError, match=r'data\.test_files is empty'):
    data.prepare_corpus(config)
  with pytest.raises(ValueError, match=r'data\.hf_name is empty'):
    data.prepare_corpus(data_config(tmp_path, corpus='hf', hf_name=''))


def test_bytes_that_are_not_utf8_name_the_file_and_offset(tmp_path):
  paths = write_text(tmp_path)
  paths['test'].write_bytes(b'ok line\ncaf\xe9\n')
  with pytest.raises(ValueError, match=r'test\.txt is not UTF-8: byte 11 is 0xe9'):
    data.prepare_corpus(text_config(tmp_path, paths))


@pytest.mark.parametrize('content', ['', '\n\n  \n'])
def test_empty_corpus_is_refused(tmp_path, content):
  paths = write_text(tmp_path)
  paths['train'].write_text(content)
  with pytest.raises(ValueError, match=r'data\.train_files: .*train\.txt.* empty'):
    data.prepare_corpus(text_config(tmp_path, paths))
