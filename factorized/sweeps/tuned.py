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
override, and the fields come in the order the tuned run's name gives them, so a point's
sub-workdirs are named as the seed-0 run of its configuration but the seed; the reports
aggregate the new seeds with it (by the config's values, whatever the names).

Each command reproduces its tuned run's saved config but the seed: a field that every run
held at a value other than the rank sweep's (`axis=train.num_steps:3000` given to every
search command: no axis of the reports, since it never varied) is given too, as are a
kind's size fields (dpq's `model.embed.dpq_groups`); fields the arguments after `--` set
are theirs. A field that no `axis=` can give (a tuple) fails, naming it.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

import pandas as pd

from factorized import embeddings
from factorized.analysis import table as sweep_table
from factorized.config import cli
from factorized.sweeps import sweep as sweep_lib

SWEEP_CONFIG = 'configs/rank_sweep.py'
LR_FIELD = 'train.lr'  # the sweep's own `lrs=` argument
SEED_FIELD = 'seed'
_ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def _extra_fields(extra: list[str]) -> set[str]:
  """The config fields that `--config.FIELD=VALUE` arguments set."""
  return {argument.removeprefix('--config.').partition('=')[0] for argument in extra
          if argument.startswith('--config.')}


def _unswept(saved: dict, arg: str, skip: set[str]) -> dict[str, object]:
  """{field: saved value} where the run's migrated config `saved` differs from the one
  point the rank sweep makes of `arg`, `skip` and the seed aside."""
  module = cli.load_module(str(_ROOT / SWEEP_CONFIG))
  point, *_ = sweep_lib.make_points(module.get_config(arg), module.get_sweep(arg))
  made = sweep_table.flat(point.config.to_dict())
  return {field: value for field, value in sweep_table.flat(saved).items()
          if field in made and value != made[field] and field != SEED_FIELD
          and field not in skip}


def commands(sweep_dir: str | pathlib.Path, seeds: str, extra: list[str]) -> list[str]:
  """One `python train.py` command per tuned point of `sweep_dir` (module docstring)."""
  root = pathlib.Path(sweep_dir)
  rows = sweep_table.rows_table(sweep_table.collect_rows(root)[0])
  chosen = sweep_table.tuned(rows, over=None)
  if 'method' in rows:
    rows = rows[rows['method'] == sweep_table.TRAINED]
  fields = sweep_table.sweep_axes(root)
  fixed = _extra_fields(extra)
  found = []
  for _, row in chosen.iterrows():
    run = rows.loc[sweep_table.matching(rows, row, [*sweep_table.GROUP, *fields.values()]),
                   'run'].iloc[0]
    saved = sweep_table.run_config(root / run)
    parts = _point_arguments(row)
    parts.append(f'lrs={_value(saved["train"]["lr"])}')
    axes = {field: row[column] for field, column in fields.items()
            if field != LR_FIELD and not pd.isna(row[column])}
    arg = ','.join([*parts, *_axis_argument(axes), 'seeds=0'])
    for field, value in _unswept(saved, arg, {LR_FIELD, *axes, *fixed}).items():
      if isinstance(value, (tuple, list, dict)):
        raise ValueError(f'{root / run}: {field} = {value!r} differs from the rank sweep\'s '
                         f'and no axis= gives it; add -- --config.{field}=... to the command.')
      axes[field] = value
    parts += [*_axis_argument(_in_name_order(axes, run)), f'seeds={seeds}']
    found.append(shlex.join(['python', 'train.py', f'--config={SWEEP_CONFIG}:{",".join(parts)}',
                             *extra]))
  return found


def _in_name_order(axes: dict[str, object], run: str) -> dict[str, object]:
  """`axes` in the order their `_<field><value>` parts have in the run's name (those the
  name leaves out, a value equal to the rank sweep's, last), so the new seeds' sub-workdirs
  are named as `run` but its seed."""
  def place(field: str) -> int:
    found = run.find(f'_{field.rsplit(".", 1)[-1]}{axes[field]}')
    return len(run) if found < 0 else found
  return dict(sorted(axes.items(), key=lambda item: place(item[0])))


def _axis_argument(axes: dict[str, object]) -> list[str]:
  """['axis=F1:V1/F2:V2'], or [] without fields."""
  return ['axis=' + '/'.join(f'{field}:{_value(value)}' for field, value in axes.items())
          ] if axes else []


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
