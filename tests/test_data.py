"""prepare_corpus's cache and run tokenizer, train batches (resume, processes), eval coverage."""

import json
import subprocess
import sys

import numpy as np
import pytest

from factorized import frequency
from factorized.data import pipeline as data
from factorized.data import tokenizer as tokenizer_lib


def test_stats_has_the_documented_fields(text_config):
  stats = data.prepare_corpus(text_config).stats()
  assert {'vocab_size', 'tokens', 'unk_rate', 'cache_path'} <= set(stats)
  assert set(stats['tokens']) == set(stats['unk_rate']) == set(data.SPLITS)
  assert stats['tokens'] == stats['words']
  json.dumps(stats)


def test_cache_is_hit_on_the_second_run_and_invalidated_by_the_tokenizer_config(
    text_config, monkeypatch):
  first = data.prepare_corpus(text_config)
  assert not first.from_cache
  with monkeypatch.context() as patch:  # a hit must not tokenise
    patch.setattr(data, '_encode', lambda *a: pytest.fail('tokenised again'))
    second = data.prepare_corpus(text_config)
  assert second.from_cache and second.cache_path == first.cache_path
  for split in data.SPLITS:
    assert np.array_equal(first.splits[split], second.splits[split])
    assert second.splits[split].dtype == np.int32
  text_config.min_freq = 1
  third = data.prepare_corpus(text_config)
  assert not third.from_cache and third.cache_path != first.cache_path
  assert third.vocab_size > first.vocab_size


def test_cache_is_invalidated_when_a_file_changes(text_config):
  first = data.prepare_corpus(text_config)
  with open(text_config.test_files, 'a') as f:
    f.write('w1 w2\n')
  changed = data.prepare_corpus(text_config)
  assert not changed.from_cache and changed.cache_path != first.cache_path
  assert changed.splits['test'].size == first.splits['test'].size + 3


def test_bpe_counts_whitespace_words_for_word_level_perplexity(text_config):
  words = data.prepare_corpus(text_config)
  text_config.update(tokenizer='bpe', vocab_size=300)
  bpe = data.prepare_corpus(text_config)
  assert bpe.words == words.words  # whitespace words + <eos>s, whatever the tokenizer
  assert bpe.stats()['unk_rate'] == {'train': 0.0, 'valid': 0.0, 'test': 0.0}
  assert bpe.tokenizer.kind == 'bpe' and bpe.vocab_size <= 300


def test_run_tokenizer_is_saved_reused_and_checked(text_config, tmp_path, monkeypatch):
  text_config.update(tokenizer='bpe', vocab_size=300)
  workdir = tmp_path / 'run'
  first = data.prepare_corpus(text_config, run_dir=str(workdir))
  saved = workdir / data.TOKENIZER_FILE
  with open(f'{first.cache_path}/{data.TOKENIZER_FILE}') as cached:
    assert saved.read_text() == cached.read()
  # The cache is gone (another machine): the run's tokenizer is reused, not retrained.
  monkeypatch.setenv('FACTORIZED_CACHE_DIR', str(tmp_path / 'elsewhere'))
  text_config.cache_dir = ''
  monkeypatch.setattr(tokenizer_lib.BpeTokenizer, 'train', lambda *a, **k: pytest.fail('train'))
  again = data.prepare_corpus(text_config, run_dir=str(workdir))
  assert not again.from_cache
  assert np.array_equal(again.splits['valid'], first.splits['valid'])
  # The run's tokenizer belongs to another data config.
  text_config.vocab_size = 400
  with pytest.raises(ValueError, match=r'run/tokenizer\.json was made for another'):
    data.prepare_corpus(text_config, run_dir=str(workdir))


def test_run_tokenizer_that_differs_from_the_cached_one_is_named(text_config, tmp_path):
  workdir = tmp_path / 'run'
  data.prepare_corpus(text_config, run_dir=str(workdir))
  saved = workdir / data.TOKENIZER_FILE
  record = json.loads(saved.read_text())
  record['state']['vocab'][2:4] = record['state']['vocab'][3:1:-1]  # same key, other ids
  saved.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=r'run/tokenizer\.json differs from the tokenizer'):
    data.prepare_corpus(text_config, run_dir=str(workdir))


def test_train_counts_are_saved_with_the_run_once_and_checked(text_config, tmp_path):
  workdir = tmp_path / 'run'
  corpus = data.prepare_corpus(text_config, run_dir=str(workdir))
  counts = data.load_train_counts(workdir)
  assert counts.dtype == np.int64
  np.testing.assert_array_equal(counts, np.bincount(corpus.splits['train'],
                                                    minlength=corpus.vocab_size))
  data.prepare_corpus(text_config, run_dir=str(workdir))  # the same counts: kept
  np.save(workdir / data.TRAIN_COUNTS_FILE, counts + 1)
  with pytest.raises(ValueError, match=r'run/train_counts\.npy holds other train-split counts'):
    data.prepare_corpus(text_config, run_dir=str(workdir))
  with pytest.raises(FileNotFoundError, match=r'train_counts\.npy does not exist'):
    data.load_train_counts(tmp_path / 'elsewhere')
  assert list(frequency.frequency_order(np.array([3, 5, 5, 0, 4]))) == [1, 2, 4, 0, 3]


def test_seq_len_longer_than_the_valid_split_names_the_field(text_config):
  valid = data.prepare_corpus(text_config).splits['valid'].size
  text_config.seq_len = valid + 1
  with pytest.raises(ValueError, match=rf'data\.seq_len={valid + 1} is longer than the valid'):
    data.prepare_corpus(text_config)


def take(batches, n):
  return [next(batches) for _ in range(n)]


def test_train_batches_pack_rows_and_reshuffle_each_epoch():
  tokens = np.arange(101, dtype=np.int32)
  batches = data.TrainBatches(tokens, seq_len=5, global_batch_size=4, seed=3)
  assert batches.rows_per_epoch == 20  # rows overlap by one token: (101 - 1) // 5
  epochs = [np.concatenate([b['inputs'] for b in take(batches, 5)]) for _ in range(2)]
  for inputs in epochs:  # every row once per epoch
    assert sorted(inputs[:, 0].tolist()) == list(range(0, 100, 5))
  assert not np.array_equal(epochs[0], epochs[1])
  batch = next(batches)
  assert batch['inputs'].shape == batch['targets'].shape == (4, 5)
  assert batch['inputs'].dtype == batch['targets'].dtype == np.int32
  assert np.array_equal(batch['targets'], batch['inputs'] + 1)
  again = data.TrainBatches(tokens, seq_len=5, global_batch_size=4, seed=3)
  assert np.array_equal(next(again)['inputs'], epochs[0][:4])


@pytest.mark.parametrize('position', [0, 5, 16, 17, 33])
def test_restored_iterator_yields_exactly_the_next_batches(text_config, position):
  tokens = data.prepare_corpus(text_config).splits['train']
  make = lambda: data.TrainBatches(tokens, seq_len=8, global_batch_size=5, seed=5)
  # 84 rows: batch 16 holds the last 4 rows of epoch 0 and the first of epoch 1, batch 33
  # straddles the next boundary the same way.
  assert make().rows_per_epoch == 84
  reference = take(make(), position + 8)
  batches = make()
  take(batches, position)
  state = json.loads(json.dumps(batches.get_state()))
  restored = make()
  restored.set_state(state)
  for expected, got, original in zip(reference[position:], take(restored, 8), take(batches, 8),
                                     strict=True):
    for key in ('inputs', 'targets'):
      assert np.array_equal(expected[key], got[key])
      assert np.array_equal(expected[key], original[key])


def test_restoring_a_position_for_another_corpus_is_refused():
  batches = data.TrainBatches(np.arange(50), seq_len=4, global_batch_size=2, seed=0)
  with pytest.raises(ValueError, match='rows per epoch'):
    batches.set_state({'epoch': 1, 'index': 0, 'rows_per_epoch': 7})


@pytest.mark.parametrize('process_count', [1, 2, 4])
def test_process_slices_make_up_the_global_batch(process_count):
  tokens = np.arange(151, dtype=np.int32)
  kwargs = dict(seq_len=5, global_batch_size=8, seed=1)
  whole = take(data.TrainBatches(tokens, **kwargs), 6)  # 30 rows: crosses an epoch
  parts = [take(data.TrainBatches(tokens, process_index=p, process_count=process_count,
                                  **kwargs), 6) for p in range(process_count)]
  for step, batch in enumerate(whole):
    for key in ('inputs', 'targets'):
      local = [part[step][key] for part in parts]
      assert all(x.shape == (8 // process_count, 5) for x in local)
      assert np.array_equal(np.concatenate(local), batch[key])


def test_batch_not_divisible_by_the_process_count_is_refused():
  with pytest.raises(ValueError, match='multiple of the process count 4'):
    data.TrainBatches(np.arange(50), seq_len=4, global_batch_size=6, seed=0, process_count=4)


@pytest.mark.parametrize('num_tokens, batch_size, process_count',
                         [(40, 4, 1), (40, 8, 2), (37, 3, 1), (37, 2, 2), (3, 4, 4)])
def test_eval_batches_cover_every_token_once(num_tokens, batch_size, process_count):
  tokens = np.arange(2, num_tokens + 2, dtype=np.int32)
  kwargs = dict(seq_len=5, global_batch_size=batch_size)
  parts = [list(data.eval_batches(tokens, process_index=p, process_count=process_count,
                                  **kwargs)) for p in range(process_count)]
  num_batches = data.num_eval_batches(num_tokens, **kwargs)
  assert all(len(part) == num_batches for part in parts)
  glued = {key: np.concatenate([np.concatenate([part[b][key] for part in parts])
                                for b in range(num_batches)]) for key in parts[0][0]}
  assert glued['mask'].shape == (num_batches * batch_size, 5)
  assert glued['inputs'].dtype == glued['targets'].dtype == np.int32
  real = glued['mask'].reshape(-1) == 1.0
  assert real.sum() == num_tokens
  assert np.array_equal(glued['targets'].reshape(-1)[real], tokens)
  assert np.array_equal(glued['inputs'].reshape(-1)[real],
                        np.concatenate([[tokenizer_lib.EOS_ID], tokens[:-1]]))


def test_command_line_prints_the_statistics_as_json(text_config, repo_root):
  overrides = [f'--config.data.{name}={text_config[name]}'
               for name in ('corpus', 'train_files', 'valid_files', 'test_files', 'cache_dir')]
  result = subprocess.run(
      [sys.executable, '-m', 'factorized.data', '--config=configs/brown.py', *overrides],
      cwd=repo_root, capture_output=True, text=True, check=True)
  stats = json.loads(result.stdout)
  assert stats['cache_path'].startswith(text_config.cache_dir)
  assert stats['tokens']['train'] > 0 and stats['vocab_size'] > 2


def test_eval_batches_check_at_the_call_and_accept_an_empty_split():
  with pytest.raises(ValueError, match='multiple of the process count 2'):
    data.eval_batches(np.arange(9), seq_len=4, global_batch_size=3, process_count=2)
  assert list(data.eval_batches(np.arange(0), seq_len=4, global_batch_size=2)) == []


@pytest.mark.parametrize('stride', [8, 5, 3, 1])
def test_strided_eval_windows_score_every_token_once_with_context(stride):
  tokens = np.arange(2, 45, dtype=np.int32)  # 43 tokens; id = position + 2
  seq_len, scored = 8, []
  for batch in data.eval_batches(tokens, seq_len=seq_len, global_batch_size=3, stride=stride):
    for inputs, targets, mask in zip(batch['inputs'], batch['targets'], batch['mask'],
                                     strict=True):
      for position in np.flatnonzero(mask):
        assert targets[position] == tokens[targets[position] - 2]
        if position:  # the window's inputs are the tokens right before each target
          assert inputs[position] == targets[position] - 1
        context = position + 1  # tokens the target sees in its window (incl. its input)
        if targets[position] - 2 >= seq_len:  # past the first window: the promised context
          assert context >= seq_len - stride + 1
      scored.extend(targets[mask > 0])
  assert sorted(scored) == list(tokens)
  assert data.num_eval_batches(43, seq_len=8, global_batch_size=3, stride=stride) == len(
      list(data.eval_batches(tokens, seq_len=8, global_batch_size=3, stride=stride)))


def test_the_default_stride_gives_the_non_overlapping_windows():
  tokens = np.arange(5, 40, dtype=np.int32)
  default = list(data.eval_batches(tokens, seq_len=8, global_batch_size=2))
  strided = list(data.eval_batches(tokens, seq_len=8, global_batch_size=2, stride=8))
  for a, b in zip(default, strided, strict=True):
    for name in ('inputs', 'targets', 'mask'):
      np.testing.assert_array_equal(a[name], b[name])
  assert default[0]['inputs'][0, 0] == tokenizer_lib.EOS_ID
  assert (default[0]['inputs'][1, 1:] == default[0]['targets'][1, :-1]).all()
  assert default[0]['targets'][1, 0] == tokens[8]  # window 1 starts where window 0 ended


def test_frequency_bands_rank_tokens_by_train_counts_and_keep_unk_apart():
  # Token 0 is <unk>; token 5 is the most frequent, then 3, 4, 2 (tie 6-9 by id), 1.
  train = np.array([5] * 9 + [3] * 7 + [4] * 5 + [0] * 20 + [2] * 3 + [1] * 1 + [6, 7])
  band_V, names = data.frequency_bands(data.token_counts(train, 10), (2, 4))
  assert names == ['1-2', '3-4', '5+', '<unk>']
  assert list(band_V) == [3, 2, 1, 0, 1, 0, 2, 2, 2, 2]  # by rank: 5,3 | 4,2 | 1,6,7,8,9
  assert band_V.dtype == np.int32
  for bad in [(100, 100), (0, 5), (), ('a',)]:
    with pytest.raises(ValueError, match='eval.band_edges='):
      data.frequency_bands(data.token_counts(train, 10), bad)


def test_frequency_classes_count_train_occurrences_and_keep_unk_apart():
  counts_V = np.array([20, 500, 0, 3, 1, 4, 10, 11, 100, 101])  # id 0 is <unk>
  class_V, names = data.frequency_classes(counts_V, (1, 4, 11, 101))
  assert names == ['0', '1-3', '4-10', '11-100', '101+', '<unk>']
  assert list(class_V) == [5, 4, 0, 1, 1, 2, 2, 3, 3, 4]
  assert class_V.dtype == np.int32
  for bad in [(4, 4), (0, 5), (), (1.5,)]:
    with pytest.raises(ValueError, match=r'^eval\.count_edges='):
      data.frequency_classes(counts_V, bad)
  assert data.frequent_classes((1, 4, 11, 101), 11) == ['11-100', '101+']
  with pytest.raises(ValueError, match=r'^eval\.frequent_count=12 must be one of'):
    data.frequent_classes((1, 4, 11, 101), 12)
