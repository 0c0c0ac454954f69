r"""A small decoder-only Transformer LM on the Brown corpus (Bengio et al. 2003 protocol).

Arguments (after the colon): kind=K, any of factorized.embeddings.KINDS (one file each in
factorized/embeddings/), rank=R (what R is depends on the kind: docs/kinds.md; ignored by
dense), head=tied|untied, runlocal (shrink everything: trains in seconds, for tests and
smoke runs), gpu (a larger model for accelerators).

Launch commands:

  # The dense baseline (about 15 minutes on an idle 2-core CPU):
  python train.py --config=configs/brown.py --workdir=runs/dense
  # A factorized embedding, rank 64:
  python train.py --config=configs/brown.py:kind=svd,rank=64 --workdir=runs/svd64
  python train.py --config=configs/brown.py:kind=albert,rank=64 --workdir=runs/albert64
  # Untied output head (separates input-side factorization from the softmax bottleneck):
  python train.py --config=configs/brown.py:kind=svd,rank=64,head=untied --workdir=runs/svd64u
  # Seconds-long smoke run:
  python train.py --config=configs/brown.py:runlocal --workdir=/tmp/brown_local
  # Accelerator-sized model:
  python train.py --config=configs/brown.py:gpu,kind=svd,rank=128 --workdir=runs/gpu_svd128
  # Any field can be overridden:
  python train.py --config=configs/brown.py --config.train.lr=1e-3 --workdir=runs/lr1e-3
  # Evaluate exactly on the test split:
  python eval.py --workdir=runs/svd64 --split=test
"""

import ml_collections

from configs import lm
from factorized.config.args import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the Brown config (configs/lm.py on corpus=brown); see the module docstring."""
  arg = parse_arg(arg, kind='dense', rank=64, head='tied', head_kind='dense', head_rank=0,
                  runlocal=False, gpu=False)
  flags = [name for name in ('runlocal', 'gpu') if arg[name]]
  return lm.get_config(','.join(['corpus=brown', f'kind={arg.kind}', f'rank={arg.rank}',
                                 f'head={arg.head}', f'head_kind={arg.head_kind}',
                                 f'head_rank={arg.head_rank}', *flags]))
