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
are theirs, and those of where a run ran (a cache directory, the launcher) are left out. A
value no `axis=` can give (a tuple, a path) fails, naming the field. The rank sweep's own
arguments that the search gave (`gpu`, `runlocal`, `corpus=ptb`) go in `--sweep_args`.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

import numpy as np
import pandas as pd

from factorized import embeddings
from factorized.analysis import table as sweep_table
from factorized.config import cli
from factorized.sweeps import sweep as sweep_lib

SWEEP_CONFIG = 'configs/rank_sweep.py'
LR_FIELD = 'train.lr'  # the sweep's own `lrs=` argument
SEED_FIELD = 'seed'
_ROOT = pathlib.Path(__file__).resolve().parents[2]


_AXIS_SEPARATORS = ('/', '+', ',', ':')  # what an `axis=` value cannot hold


def _value(value) -> str:
  """A value as an `axis=` argument gives it, exactly: '0.006', '3000', 'factors'."""
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) >= 1 else repr(value)
  return str(value)


def _point_arguments(row: pd.Series, saved: dict) -> list[str]:
  """The rank sweep's arguments that make `row`'s point (kind, rank and head) alone; the
  head's rank as its run `saved` it (0: the input's, given by no argument)."""
  parts = [f'kinds={row["kind"]}']
  if embeddings.ranked(row['kind']):
    parts.append(f'ranks={int(row["rank"])}')
  if row['head'] != 'tied':
    parts.append('head=untied')
    if row['head_kind'] != 'dense':
      parts.append(f'head_kinds={row["head_kind"]}')
      if saved['model']['embed'].get('head_rank'):
        parts.append(f'head_ranks={int(saved["model"]["embed"]["head_rank"])}')
  return parts


def _extra_fields(extra: list[str]) -> set[str]:
  """The config fields that `--config.FIELD=VALUE` arguments set."""
  return {argument.removeprefix('--config.').partition('=')[0] for argument in extra
          if argument.startswith('--config.')}


def _unswept(module, saved: dict, arg: str, skip: set[str], run: pathlib.Path
             ) -> dict[str, object]:
  """{field: saved value} where the run's migrated config `saved` differs from the one
  point the rank sweep (its config `module`) makes of `arg`, `skip`, the seed and the fields
  of where it ran aside; a ValueError naming the field where no `axis=` can give its value."""
  points = sweep_lib.make_points(module.get_config(arg), module.get_sweep(arg))
  if not points:
    raise ValueError(f'{run}: the rank sweep makes no point of {arg!r} (a rank above its cap? '
                     'give the sweep\'s own arguments with --sweep_args, e.g. gpu).')
  made = sweep_table.flat(points[0].config.to_dict())
  differ = {field: value for field, value in sweep_table.flat(saved).items()
            if field in made and value != made[field] and field != SEED_FIELD
            and field not in skip and not field.startswith(sweep_table.MACHINE_ONLY)}
  for field, value in differ.items():
    if isinstance(value, (tuple, list, dict)) or any(
        separator in str(value) for separator in _AXIS_SEPARATORS):
      raise ValueError(f'{run}: {field} = {value!r} differs from the rank sweep\'s and no axis= '
                       f'gives it; add -- --config.{field}=... to the command.')
  return differ


def commands(sweep_dir: str | pathlib.Path, seeds: str, extra: list[str],
             sweep_args: str = '') -> list[str]:
  """One `python train.py` command per tuned point of `sweep_dir` (module docstring);
  `sweep_args`: the rank sweep's own arguments the search gave ('gpu', 'corpus=ptb'), first
  in every command."""
  root = pathlib.Path(sweep_dir)
  rows = sweep_table.rows_table(sweep_table.collect_rows(root)[0])
  chosen = sweep_table.tuned(rows, over=None)
  if 'method' in rows:
    rows = rows[rows['method'] == sweep_table.TRAINED]
  fields = sweep_table.sweep_axes(root)
  fixed = _extra_fields(extra)
  module = cli.load_module(str(_ROOT / SWEEP_CONFIG))
  found = []
  for _, row in chosen.iterrows():
    run = rows.loc[sweep_table.matching(rows, row, [*sweep_table.GROUP, *fields.values()]),
                   'run'].iloc[0]
    saved = sweep_table.run_config(root / run)
    parts = [*filter(None, sweep_args.split(',')), *_point_arguments(row, saved),
             f'lrs={_value(saved["train"]["lr"])}']
    axes = {field: row[column] for field, column in fields.items()
            if field != LR_FIELD and not pd.isna(row[column])}
    arg = ','.join([*parts, *_axis_argument(axes), 'seeds=0'])
    axes.update(_unswept(module, saved, arg, {LR_FIELD, *axes, *fixed}, root / run))
    parts += [*_axis_argument(_in_name_order(axes, run)), f'seeds={seeds}']
    found.append(shlex.join(['python', 'train.py', f'--config={SWEEP_CONFIG}:{",".join(parts)}',
                             *extra]))
  return found


def _in_name_order(axes: dict[str, object], run: str) -> dict[str, object]:
  """`axes` in the order their `_<field><value>` parts have in the run's name (those the
  name leaves out, a value equal to the rank sweep's, last), so the new seeds' sub-workdirs
  are named as `run` but its seed. A part is matched whole (between underscores), longer
  field names first, each stretch of the name matched once (`_batch_size64` is not inside
  `_eval_batch_size64`)."""
  text, taken, place = f'{run}_', [], {}
  for field in sorted(axes, key=lambda f: -len(f.rsplit('.', 1)[-1])):
    leaf, value = field.rsplit('.', 1)[-1], axes[field]
    spellings = {_value(value), str(value)}  # '3000', or '2.0' as a float field names it
    place[field] = len(text)
    for token in (f'_{leaf}{spelling}_' for spelling in spellings):
      start = text.find(token)
      while start >= 0 and any(start < end and begin < start + len(token) - 1
                               for begin, end in taken):
        start = text.find(token, start + 1)
      if start >= 0:
        place[field] = start
        taken.append((start, start + len(token) - 1))
        break
  return dict(sorted(axes.items(), key=lambda item: place[item[0]]))


def _axis_argument(axes: dict[str, object]) -> list[str]:
  """['axis=F1:V1/F2:V2'], or [] without fields."""
  return ['axis=' + '/'.join(f'{field}:{_value(value)}' for field, value in axes.items())
          ] if axes else []


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  ours, extra = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (
      argv, [])
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      usage='%(prog)s SWEEP_DIR [--seeds=1+2] [--sweep_args=gpu] [-- ARGUMENT ...]')
  parser.add_argument('sweep_dir', help='a sweep directory or results folder')
  parser.add_argument('--seeds', default='1+2', help="the seeds to train, '+'-separated")
  parser.add_argument('--sweep_args', default='',
                      help="the rank sweep's own arguments the search gave, e.g. gpu or "
                           'corpus=ptb: first in every command')
  args = parser.parse_args(ours)
  for command in commands(args.sweep_dir, args.seeds, extra, args.sweep_args):
    print(command)


if __name__ == '__main__':
  main()
