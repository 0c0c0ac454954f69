r"""The main job: perplexity versus embedding rank, dense against ALBERT and SVD, on Brown.

`get_config(arg)` is configs/lm.py's dense config on the corpus (Brown unless corpus= says
otherwise: then it is configs/brown.py's); `get_sweep(arg)` lists the points as
dicts of config overrides: the dense baseline, then `albert` and `svd` (or the `kinds=`
given, any of factorized.embeddings.KINDS) at ranks 8, 16, 32, 64, 128 and 256, keeping the
ranks <= model.model_dim (128 here, 32 with runlocal, 512 with gpu) for every kind that has a
rank. What the rank is differs by kind (docs/kinds.md); kinds are compared on vocabulary
parameters (summary.md and ppl_vs_vocab_params.png place every point on that one axis). Each kind
keeps its own config fields at their defaults (adaptive's bands, tt's factors: see
factorized/embeddings/<kind>.py). Everything else is identical across points. train.py
runs each point in its own sub-workdir named after its overrides (dense, albert_rank8, ...,
svd_rank64_untied), skips finished points and resumes unfinished ones, then writes
summary.csv, summary.md, the plots and a `sweep` TensorBoard run (factorized/analysis/report.py).

Arguments (after the colon, comma-separated):
  corpus=brown            any of factorized.data.corpora.CORPORA (configs/lm.py; its data.* fields
                          on the command line, e.g. --config.data.path=/data/ptb);
  head=tied|untied|both   the output head of every point; `both` runs each point twice
                          (untied points get an `_untied` suffix);
  head_kinds=svd+adaptive  untied points only (head=untied or both): each untied point once
                          per head kind, its head an instance of that kind (dense: the full
                          DxV matrix, the default); sub-workdirs get `_head<kind><rank>`;
  head_ranks=16+32+64     the head kinds' ranks (capped at D; default: the input's rank), so
                          that input rank x head rank is one command:
                          head=untied,kinds=svd,ranks=16+32,head_kinds=svd,head_ranks=16+32;
  kinds=dense+albert+svd  which kinds to run ('+'-separated, of factorized.embeddings.KINDS);
  ranks=8+16+32+64+128+256  the ranks of every kind that has one, before the cap at D;
  seeds=0+1+2             run every point at each seed (sub-workdirs get `_seed<S>`; the
                          reports give mean and standard deviation over seeds); without
                          it, each point runs once at the config's seed, unsuffixed;
  lrs=1.5e-3+3e-3+6e-3    train.lr values: every point at each (short for axis=train.lr:...);
  axis=FIELD:V1+V2[/FIELD:V1+V2]  any config fields swept (values typed as the field's
                          default), every point at each combination; sub-workdirs get
                          `_<field><value>` (`svd_rank32_lr0.006_seed0`), except where a
                          value is the base config's, so that point is the one already run;
                          summary.csv gets a column per swept field, and the reports the
                          `tuned` rows (the train.lr of best valid perplexity per kind,
                          head and rank, and its test perplexity);
  runlocal                brown.py's runlocal sizes: the whole sweep (7 points) takes a
                          few minutes on a 2-core CPU;
  gpu                     brown.py's accelerator-sized model.
An svd rank must also be <= the vocabulary size (with Brown's ~18k words it always is), and
a TT-rank below its largest cut size (factorized/embeddings/tt.py; for Brown's vocabulary
and D it is above D).

Launch commands:

  # The main job (11 points, each a full run of configs/brown.py: hours on a 2-core CPU):
  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep
  # Two points at a time (a killed sweep continues where it stopped: run it again):
  python train.py --config=configs/rank_sweep.py --workdir=runs/sweep --sweep_workers=2
  # Untied output heads (input-side factorization without the softmax bottleneck):
  python train.py --config=configs/rank_sweep.py:head=untied --workdir=runs/sweep_untied
  # Smoke run of the whole sweep (a few minutes on a 2-core CPU):
  python train.py --config=configs/rank_sweep.py:runlocal --workdir=/tmp/sweep_local
  # Every kind, the new ones included, in a few minutes:
  python train.py --config=configs/rank_sweep.py:runlocal,kinds=dense+svd+adaptive+tt \
      --workdir=/tmp/sweep_kinds
  # Three seeds of some points (error bars in the reports):
  python train.py --config=configs/rank_sweep.py:kinds=dense+svd,ranks=32,seeds=0+1+2 \
      --workdir=runs/sweep
  # A learning rate per kind: every point at three rates (the reports' tuned rows pick the
  # best by valid perplexity; the test split chooses nothing):
  python train.py --config=configs/rank_sweep.py:kinds=dense+svd,ranks=32,lrs=1.5e-3+3e-3+6e-3 \
      --workdir=runs/sweep
  # Any field, here adaptive's band widths halving per band, and twice the steps:
  python train.py --config=configs/rank_sweep.py:kinds=adaptive,ranks=128,seeds=0,\
axis=model.embed.band_factor:2.0/train.num_steps:3000 --workdir=runs/sweep
  # Only some points; overrides apply to every point:
  python train.py --config=configs/rank_sweep.py:kinds=dense+svd,ranks=16+64 \
      --config.train.num_steps=3000 --workdir=runs/sweep_short
  # Post-hoc SVD of the trained dense baseline (rows `posthoc_svd` in the sweep table), and
  # its frequency-weighted version (rows `posthoc_svd_freq`):
  python eval.py --workdir=runs/sweep/dense --svd_ranks=8,16,32,64,128
  python eval.py --workdir=runs/sweep/dense --svd_ranks=8,16,32,64,128 --svd_weighting=frequency
  python eval.py --workdir=runs/sweep/dense --svd_ranks=8,16,32,64,128 --svd_finetune_steps=300
  # Compare: HParams (table, scatter) and Scalars (ppl_vs_rank/<kind>) dashboards:
  tensorboard --logdir=runs/sweep
"""

from __future__ import annotations

import ml_collections

from configs import lm
from factorized.config.args import parse_arg
from factorized.embeddings import KINDS, ranked


def _parse(arg: str | None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, corpus='brown', head='tied', kinds='dense+albert+svd',
                  ranks='8+16+32+64+128+256', head_kinds='', head_ranks='', seeds='', lrs='',
                  axis='', runlocal=False, gpu=False)
  if arg.head not in ('tied', 'untied', 'both'):
    raise ValueError(f'Config argument head={arg.head!r} must be tied, untied or both.')
  kinds = [kind for kind in arg.kinds.split('+') if kind]
  unknown = sorted(set(kinds) - set(KINDS))
  if unknown or not kinds:
    raise ValueError(f'Config argument kinds={arg.kinds!r}: expected a +-separated subset of '
                     f'{"+".join(KINDS)}.')
  try:
    ranks = sorted({int(rank) for rank in arg.ranks.split('+') if rank})
  except ValueError:
    raise ValueError(f'Config argument ranks={arg.ranks!r}: expected +-separated integers, '
                     'e.g. ranks=8+16+32.') from None
  if any(rank < 1 for rank in ranks):
    raise ValueError(f'Config argument ranks={arg.ranks!r}: ranks must be >= 1.')
  arg.kinds, arg.ranks = '+'.join(kinds), '+'.join(map(str, ranks))
  head_kinds = [kind for kind in arg.head_kinds.split('+') if kind]
  if sorted(set(head_kinds) - set(KINDS)):
    raise ValueError(f'Config argument head_kinds={arg.head_kinds!r}: expected a +-separated '
                     f'subset of {"+".join(KINDS)}.')
  if head_kinds and arg.head == 'tied':
    raise ValueError(f'Config argument head_kinds={arg.head_kinds!r} needs head=untied or '
                     'head=both (a tied head is the input\'s own table).')
  try:
    head_ranks = sorted({int(rank) for rank in arg.head_ranks.split('+') if rank})
  except ValueError:
    head_ranks = [0]
  if any(rank < 1 for rank in head_ranks) or (head_ranks and not head_kinds):
    raise ValueError(f'Config argument head_ranks={arg.head_ranks!r}: expected +-separated '
                     'integers >= 1, with head_kinds=, e.g. head_kinds=svd,head_ranks=16+32.')
  arg.head_kinds, arg.head_ranks = '+'.join(head_kinds), '+'.join(map(str, head_ranks))
  arg.seeds = '+'.join(map(str, _seeds(arg.seeds)))
  _axes(arg, _base_config(arg))  # fails here, naming the argument, on a bad axis
  return arg


def _axes(arg: ml_collections.ConfigDict, base: ml_collections.ConfigDict
          ) -> list[tuple[str, list]]:
  """[(dotted field, values typed as its default)] of `lrs=` and `axis=`."""
  axis_texts = [f'train.lr:{arg.lrs}'] if arg.lrs else []
  axis_texts += [axis_text for axis_text in arg.axis.split('/') if axis_text]
  axes = []
  for axis_text in axis_texts:
    field, _, raw = axis_text.partition(':')
    node = _field(base, field)
    if node is _MISSING:
      raise ValueError(f'Config argument axis={axis_text!r}: {field!r} is not a config field '
                       '(e.g. axis=train.lr:1e-3+3e-3).')
    values = [value for value in raw.split('+') if value]
    if not values or isinstance(node, (ml_collections.ConfigDict, tuple, list)):
      raise ValueError(f'Config argument axis={axis_text!r}: expected FIELD:V1+V2 over a number, '
                       'string or bool field, e.g. axis=train.lr:1e-3+3e-3.')
    axes.append((field, [_typed(value, node, axis_text) for value in values]))
  return axes


_MISSING = object()


def _field(config: ml_collections.ConfigDict, field: str):
  """The value of dotted `field` in `config`, or _MISSING."""
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _MISSING
    node = node[part]
  return node


def _typed(raw: str, default, axis_text: str):
  """`raw` as the type of the field's `default`."""
  try:
    if isinstance(default, bool):
      if raw.lower() not in ('true', 'false'):
        raise ValueError
      return raw.lower() == 'true'
    return type(default)(raw) if isinstance(default, (int, float)) else raw
  except ValueError:
    raise ValueError(f'Config argument axis={axis_text!r}: {raw!r} is not a '
                     f'{type(default).__name__} like the field\'s default {default!r}.') from None


def _seeds(text: str) -> list[int]:
  try:
    seeds = sorted({int(seed) for seed in str(text).split('+') if seed != ''})
  except ValueError:
    seeds = [-1]
  if any(seed < 0 for seed in seeds):
    raise ValueError(f'Config argument seeds={text!r}: expected +-separated integers >= 0, '
                     'e.g. seeds=0+1+2.')
  return seeds


def _base_config(arg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  head = 'tied' if arg.head == 'both' else arg.head
  flags = [name for name in ('runlocal', 'gpu') if arg[name]]
  return lm.get_config(','.join([f'corpus={arg.corpus}', 'kind=dense', f'head={head}',
                                 *flags]))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config of every point: configs/lm.py's dense config (see the docstring)."""
  return _base_config(_parse(arg))


def get_sweep(arg: str | None = None) -> list[dict]:
  """The points: dicts of dotted config overrides, the dense baseline first."""
  arg = _parse(arg)
  dim = _base_config(arg).model.model_dim
  ranks = [rank for rank in map(int, arg.ranks.split('+')) if rank <= dim]  # capped at D
  heads = ('tied', 'untied') if arg.head == 'both' else (arg.head,)
  seeds = [{'seed': seed} for seed in _seeds(arg.seeds)] or [{}]
  base = _base_config(arg)
  # Every combination of the axes' values; a value equal to the base config's is no
  # override, so that point keeps the name (and the run) it has without the axis.
  combinations = [{}]
  for field, values in _axes(arg, base):
    default = _field(base, field)
    combinations = [{**combination, **({} if value == default else {field: value})}
                    for combination in combinations for value in values]
  points = []
  for head in heads:
    untied = {'model.embed.head': 'untied'} if head == 'untied' else {}
    for kind in arg.kinds.split('+'):
      for rank in ranks if ranked(kind) else [None]:
        with_rank = {} if rank is None else {'model.embed.rank': rank}
        points.extend({'model.embed.kind': kind, **with_rank, **untied, **head_of_its_own,
                       **axes, **seed}
                      for head_of_its_own in (_heads(arg, dim) if untied else [{}])
                      for axes in combinations for seed in seeds)
  return points


def _heads(arg: ml_collections.ConfigDict, dim: int) -> list[dict]:
  """The head overrides of an untied point: one per head kind and head rank (capped at D);
  dense (or no head_kinds) is the full DxV matrix, no override."""
  head_ranks = [rank for rank in map(int, filter(None, arg.head_ranks.split('+')))
                if rank <= dim] or [0]
  heads = []
  for head_kind in arg.head_kinds.split('+') if arg.head_kinds else ['dense']:
    if head_kind == 'dense' or not ranked(head_kind):
      heads.append({} if head_kind == 'dense' else {'model.embed.head_kind': head_kind})
      continue
    heads.extend({'model.embed.head_kind': head_kind,
                  **({'model.embed.head_rank': rank} if rank else {})} for rank in head_ranks)
  return heads
