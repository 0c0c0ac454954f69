r"""The commands that train each point's tuned configuration at more seeds.

  python -m factorized.sweeps.tuned runs/brown_trainvocab --seeds=1+2 -- \
      --config.data.vocab_from=train --workdir=runs/brown_trainvocab

prints one `train.py` command per point (kind, rank, shape and head) trained in several
configurations: the rank sweep (configs/rank_sweep.py) of that point alone, with each swept
field at the value its tuned configuration holds (analysis/table.py's `tuned` over every
swept field: lowest best-valid perplexity; the test split chooses nothing), at the seeds
given. The learning rate is always given (`lrs=`, as the sweep names its points by it),
swept or not; arguments after `--` are added to every command (the other fields the sweep
fixed on the command line, its workdir). A value equal to the rank sweep's own makes no
override, so a point's sub-workdir is named as the seed-0 run of its configuration, and the
reports aggregate the new seeds with it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

import pandas as pd

from factorized import embeddings
from factorized.analysis import table as sweep_table

SWEEP_CONFIG = 'configs/rank_sweep.py'
LR_FIELD = 'train.lr'  # the sweep's own `lrs=` argument


def _value(value) -> str:
  """A swept value as the sweep's `axis=` writes it: '0.006', '3000', 'factors'."""
  if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
    return str(int(value))
  return f'{value:g}' if isinstance(value, float) else str(value)


def _point_arguments(row: pd.Series) -> list[str]:
  """The rank sweep's arguments that make `row`'s point (kind, rank and head) alone."""
  parts = [f'kinds={row["kind"]}']
  if embeddings.ranked(row['kind']):
    parts.append(f'ranks={int(row["rank"])}')
  if row['head'] != 'tied':
    parts.append('head=untied')
    if row['head_kind'] != 'dense':
      parts.append(f'head_kinds={row["head_kind"]}')
      if not pd.isna(row['head_rank']):
        parts.append(f'head_ranks={int(row["head_rank"])}')
  return parts


def commands(sweep_dir: str | pathlib.Path, seeds: str, extra: list[str]) -> list[str]:
  """One `python train.py` command per tuned point of `sweep_dir` (module docstring)."""
  root = pathlib.Path(sweep_dir)
  table = sweep_table.rows_table(sweep_table.collect_rows(root)[0])
  chosen = sweep_table.tuned(table, over=None)
  fields = sweep_table.sweep_axes(root)
  if LR_FIELD not in fields and not table.empty:  # one rate for every point: `lrs=` names
    fields = {LR_FIELD: None, **fields}           # it still
    run = table['run'].iloc[0]
    rate = json.loads((root / run / 'summary.json').read_text())['config']['train']['lr']
  found = []
  for _, row in chosen.iterrows():
    if row['shape']:
      raise ValueError(f'{root}: {row["kind"]} with {row["shape"]} has no rank-sweep argument '
                       'for its shape; train its seeds with --config.model.embed overrides.')
    parts = _point_arguments(row)
    axes = []
    for field, column in fields.items():
      if field == LR_FIELD:
        parts.append(f'lrs={_value(rate if column is None else row[column])}')
      elif not pd.isna(row[column]):
        axes.append(f'{field}:{_value(row[column])}')
    if axes:
      parts.append('axis=' + '/'.join(axes))
    parts.append(f'seeds={seeds}')
    found.append(shlex.join(['python', 'train.py', f'--config={SWEEP_CONFIG}:{",".join(parts)}',
                             *extra]))
  return found


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  ours, extra = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (
      argv, [])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   usage='%(prog)s SWEEP_DIR [--seeds=1+2] [-- ARGUMENT ...]')
  parser.add_argument('sweep_dir', help='a sweep directory or results folder')
  parser.add_argument('--seeds', default='1+2', help="the seeds to train, '+'-separated")
  args = parser.parse_args(ours)
  for command in commands(args.sweep_dir, args.seeds, extra):
    print(command)


if __name__ == '__main__':
  main()
