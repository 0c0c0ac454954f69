r"""A small decoder-only Transformer LM on any corpus: the model, training and evaluation
every experiment shares. configs/brown.py is this config on Brown; configs/rank_sweep.py
sweeps it.

Arguments (after the colon): corpus=C, any of factorized.data.corpora.CORPORA (one file each
in factorized/data/corpora/; the corpus's own data.* fields are set on the command line,
e.g. --config.data.path=...), kind=K, any of factorized.embeddings.KINDS (one file each in
factorized/embeddings/), rank=R (what R is depends on the kind: docs/kinds.md; ignored by
dense), head=tied|untied, head_kind=K and head_rank=R (an untied head of its own kind and
rank: an svd head is a rank-R softmax; dense, the default, is a full DxV matrix), runlocal
(shrink everything: trains in seconds, for tests and smoke runs; the vocabulary of a corpus
whose protocol fixes it is left alone), gpu (a larger model for accelerators).

  # Penn Treebank, Mikolov's files in /data/ptb (the published vocabulary of 10,000):
  python train.py --config=configs/lm.py:corpus=ptb,kind=svd,rank=32 \
      --config.data.path=/data/ptb --workdir=runs/ptb_svd32
  # WikiText-2, word level, and its raw text with byte-level BPE:
  python train.py --config=configs/lm.py:corpus=wikitext --config.data.path=/data/wikitext-2 \
      --workdir=runs/wt2
  python train.py --config=configs/lm.py:corpus=wikitext --config.data.path=/data/wikitext-2-raw \
      --config.data.wikitext_raw=True --config.data.tokenizer=bpe \
      --config.data.vocab_size=8000 --workdir=runs/wt2_bpe
"""

import ml_collections

from configs import common
from factorized import embeddings
from factorized.config.args import parse_arg
from factorized.data import corpora


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; see the module docstring for `arg`."""
  arg = parse_arg(arg, corpus='brown', kind='dense', rank=64, head='tied', head_kind='dense',
                  head_rank=0, runlocal=False, gpu=False)
  protocol = corpora.corpus(arg.corpus)  # a ValueError naming corpus= when unknown
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Refuse to reuse a workdir whose saved config differs, unless this is set.
  config.overwrite = False

  config.data = ml_collections.ConfigDict()
  config.data.corpus = arg.corpus  # one of factorized.data.corpora.CORPORA
  # Each corpus's own fields (train_files, hf_name, path, ...), with their defaults: see
  # factorized/data/corpora/<corpus>.py.
  config.data.update(corpora.config_fields())
  config.data.tokenizer = 'word'  # word | bpe
  config.data.vocab_size = 0  # bpe: vocabulary size; word: a cap (0 = no cap)
  # word: Bengio's Brown protocol maps words seen <= 3 times to <unk>; a corpus whose
  # protocol fixes its vocabulary (ptb, wikitext) keeps every train type.
  config.data.min_freq = 1 if protocol.fixed_vocabulary else 4
  # word: the splits the vocabulary is counted over, train | all ('': the corpus protocol's
  # choice, recorded in the saved config: all for Brown, as Bengio et al. counted it; train
  # for the others, where a word of valid or test only is <unk>).
  config.data.vocab_from = ''
  config.data.seq_len = 128
  config.data.cache_dir = ''  # '' = $FACTORIZED_CACHE_DIR or ~/.cache/factorized

  config.model = ml_collections.ConfigDict()
  config.model.embed = ml_collections.ConfigDict()
  config.model.embed.kind = arg.kind  # one of embeddings.KINDS
  config.model.embed.rank = arg.rank  # what it means: see the kind (ignored by dense)
  config.model.embed.head = arg.head  # tied | untied
  # An untied head's own kind and rank (factorized/embeddings/base.py head_config): dense is
  # the full DxV matrix; any other kind is its own instance at head_rank (0: the input's rank),
  # used through the kind's `attend`, with the input's kind fields (bands, tt factors, ...).
  config.model.embed.head_kind = arg.head_kind
  config.model.embed.head_rank = arg.head_rank
  # Each kind's own fields (albert_head, ortho_penalty, band_cutoffs, ...), with their
  # defaults: see factorized/embeddings/<kind>.py; and every kind's quant_bits (0: float32
  # tables; 8 or 4: quantization-aware training) and quant_group (0: a scale per row):
  # factorized/embeddings/quantize.py.
  config.model.embed.update(embeddings.config_fields())
  config.model.model_dim = 128
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_dim = 512
  config.model.dropout = 0.2
  config.model.positions = 'rope'  # rope | learned
  config.model.dtype = 'float32'  # compute dtype; params, logits and loss stay float32
  # Rows per chunk of the output head and loss (factorized/model/loss.py). 0: automatic (the plain
  # loss while the batch's float32 logits fit in 768 MiB, else chunks of <= 32 MiB).
  config.model.head_chunk_rows = 0
  # Vocabulary rows per slice of a dense or untied head (factorized/model/loss.py). 0: automatic
  # (tiles of <= 8 MiB).
  config.model.head_chunk_vocab = 0
  # Recompute each block's activations in the backward pass (less memory, ~1/3 more FLOPs).
  config.model.remat = False

  config.train = ml_collections.ConfigDict()
  # 1,500 steps x 32 x 128 = 6.1M tokens (7.7 epochs of Brown's train split).
  config.train.num_steps = 1500
  config.train.batch_size = 32  # global: across all devices and processes
  config.train.grad_accum_steps = 1  # micro-batches per step (batch_size must divide)
  config.train.lr = 3e-3
  config.train.min_lr_ratio = 0.1  # cosine decays to lr * min_lr_ratio
  config.train.warmup_steps = 100
  config.train.weight_decay = 0.1
  config.train.grad_clip = 1.0  # global-norm clipping
  config.train.b1 = 0.9
  config.train.b2 = 0.98
  config.train.eval_every = 250
  config.train.eval_batch_size = 64
  config.train.ckpt_every = 250
  config.train.keep_checkpoints = 2
  config.train.log_every = 50
  # Weight decay of the embedding table (factorized/train/optim.py): table (the table shrinks as a
  # dense one does, every kind alike) | factors (every factor matrix: the old ablation) | none
  config.train.embed_decay = 'table'

  config.eval = ml_collections.ConfigDict()
  # Perplexity per frequency band of the target: ranks in train-split frequency (<unk> apart).
  config.eval.band_edges = (100, 1000, 10000)
  # ... and per frequency class: how often the target's type occurs in the train split
  # (0, 1-3, 4-10, 11-100, 101+; <unk> apart), the evidence its embedding row trained on.
  config.eval.count_edges = (1, 4, 11, 101)
  # Perplexity on the frequent types too (seen at least this often in train: one of the
  # count edges), which a vocabulary protocol's rarest words cannot move.
  config.eval.frequent_count = 11

  # SLURM resources of each sweep point (--sweep_launcher=slurm); see configs/common.py.
  config.launcher = common.launcher(gpus_per_task=1 if arg.gpu else 0,
                                    cpus_per_task=8 if arg.gpu else 2)

  if arg.gpu:
    config.model.model_dim = 512
    config.model.num_layers = 6
    config.model.num_heads = 8
    config.model.mlp_dim = 2048
    config.model.dtype = 'bfloat16'
    config.train.batch_size = 128
    config.train.lr = 1e-3

  if arg.runlocal:
    if not protocol.fixed_vocabulary:
      config.data.vocab_size = 2000
    config.data.seq_len = 32
    config.model.model_dim = 32
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.mlp_dim = 64
    config.model.embed.rank = min(arg.rank, 16)
    config.train.num_steps = 30
    config.train.batch_size = 8
    config.train.warmup_steps = 5
    config.train.eval_every = 15
    config.train.eval_batch_size = 64
    config.train.ckpt_every = 15
    config.train.log_every = 5
  return config
