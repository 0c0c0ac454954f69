"""Parsing of the `<config>.py:key=value,flag` argument that configs take.

`python train.py --config=configs/brown.py:kind=svd,rank=64,runlocal` hands the
string after the colon to `get_config(arg)`; `parse_arg` turns it into a
ConfigDict typed by the defaults given, so that a typo fails loudly.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'a=1,b=x,flag' against `defaults` (whose types convert the values).

  A bare name sets a boolean default to True. Unknown names raise a ValueError
  that lists the accepted ones.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(','):
    item = item.strip()
    if not item:
      continue
    name, has_value, raw = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise ValueError(
          f'Unknown config argument {name!r} in {arg!r}; accepted: {sorted(defaults)}.')
    default = defaults[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'Config argument {name!r} needs a value ({name}=...).')
      result[name] = True
      continue
    raw = raw.strip()
    if isinstance(default, bool):
      if raw.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'Config argument {name}={raw!r} must be true or false.')
      result[name] = raw.lower() in ('true', '1')
    elif isinstance(default, int):
      try:
        result[name] = int(raw)
      except ValueError:
        raise ValueError(f'Config argument {name}={raw!r} must be an integer.') from None
    elif isinstance(default, float):
      result[name] = float(raw)
    else:
      result[name] = raw
  return result
