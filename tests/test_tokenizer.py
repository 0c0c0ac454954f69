"""The word and bpe tokenizers: vocabulary rules, specials, encoding, saving."""

import collections

import numpy as np
import pytest

from configs import brown
from factorized.data import tokenizer as tokenizer_lib

LINES = ['the cat sat on the mat .', '', 'the dog sat .', 'a cat , a dog and the mat',
         "don't   panic 1984 !"]


def data_config(**overrides):
  config = brown.get_config('runlocal').data
  config.update(overrides)
  return config


def test_word_vocabulary_order_min_freq_and_cap():
  counts = collections.Counter('b b b a a a c c d <unk> <eos> <eos>'.split())
  tok = tokenizer_lib.WordTokenizer.from_counts(counts, min_freq=2)
  # Specials first, then by descending count, ties by string; d (1) is out.
  assert tok.vocab == ['<unk>', '<eos>', 'a', 'b', 'c']
  capped = tokenizer_lib.WordTokenizer.from_counts(counts, min_freq=1, max_size=4)
  assert capped.vocab == ['<unk>', '<eos>', 'a', 'b']
  assert tok.encode('a d <eos> c') == [2, 0, 1, 4]
  assert tok.decode([3, 0, 1]) == 'b <unk> <eos>'
  assert (tok.id_to_token(4), tok.token_to_id('zzz')) == ('c', tokenizer_lib.UNK_ID)


def test_word_encode_lines_adds_eos_per_line_and_counts_words():
  tok = tokenizer_lib.WordTokenizer.from_counts(
      tokenizer_lib.count_words([LINES]), min_freq=1)
  ids, num_words = tok.encode_lines(LINES)
  assert ids.dtype == np.int32
  assert num_words == sum(len(line.split()) for line in LINES)
  assert ids.size == num_words + len(LINES)
  assert int(np.sum(ids == tokenizer_lib.EOS_ID)) == len(LINES)
  assert tok.decode(ids).split(' <eos>')[0] == LINES[0]


def test_min_freq_that_leaves_no_word_names_the_field():
  with pytest.raises(ValueError, match=r'data\.min_freq=9 .*lower data\.min_freq'):
    tokenizer_lib.WordTokenizer.from_counts(collections.Counter('a a b'.split()), min_freq=9)


@pytest.mark.parametrize('kind, size', [('word', 2), ('word', -1), ('bpe', 100), ('bpe', 0)])
def test_vocabulary_too_small_for_the_specials_names_the_field(kind, size):
  with pytest.raises(ValueError, match=rf'data\.vocab_size={size} .*special'):
    tokenizer_lib.tokenizer_config(data_config(tokenizer=kind, vocab_size=size))


def test_unknown_tokenizer_names_the_field():
  with pytest.raises(ValueError, match=r"data\.tokenizer='chars'"):
    tokenizer_lib.tokenizer_config(data_config(tokenizer='chars'))


@pytest.fixture(scope='module')
def bpe():
  return tokenizer_lib.BpeTokenizer.train([LINES * 3], vocab_size=280)


def test_bpe_specials_size_and_no_unk(bpe):
  assert (bpe.token_to_id('<unk>'), bpe.token_to_id('<eos>')) == (0, 1)
  assert bpe.vocab_size <= 280
  ids, num_words = bpe.encode_lines(['naïve émigré ☃ zzzz', ''])
  assert tokenizer_lib.UNK_ID not in ids.tolist()
  assert num_words == 4 and ids[-2:].tolist() == [1, 1]  # the empty line is one <eos>


def test_bpe_line_is_the_concatenation_of_its_words(bpe):
  line = LINES[4]
  per_word = [i for word in line.split() for i in bpe.encode(word)]
  ids, num_words = bpe.encode_lines([line])
  assert ids[:-1].tolist() == per_word == bpe.encode(line)
  assert num_words == 4
  assert bpe.decode(ids[:-1]) == ' '.join(line.split())


@pytest.mark.parametrize('kind', ['word', 'bpe'])
def test_save_and_load_round_trip(tmp_path, bpe, kind):
  if kind == 'word':
    tok = tokenizer_lib.WordTokenizer.from_counts(
        tokenizer_lib.count_words([LINES]), min_freq=1)
  else:
    tok = bpe
  config = {'kind': kind, 'vocab_size': tok.vocab_size}
  text = tokenizer_lib.tokenizer_json(tok, config=config, corpus_key='k')
  tokenizer_lib.save_tokenizer(tmp_path / 'tokenizer.json', text)
  loaded, record = tokenizer_lib.load_tokenizer(tmp_path / 'tokenizer.json')
  assert record == {'kind': kind, 'config': config, 'corpus_key': 'k'}
  assert np.array_equal(loaded.encode_lines(LINES)[0], tok.encode_lines(LINES)[0])
  assert tokenizer_lib.tokenizer_json(loaded, config=config, corpus_key='k') == text


def test_unreadable_tokenizer_file_is_named(tmp_path):
  path = tmp_path / 'tokenizer.json'
  path.write_text('{"kind": "word"')
  with pytest.raises(ValueError, match='tokenizer.json is not a readable'):
    tokenizer_lib.load_tokenizer(path)
