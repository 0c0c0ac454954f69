"""Spec: a run's configuration as a frozen tree of plain values.

`factorized.config.build.from_config` makes one from a config file's ConfigDict, once per
start, after migrating and validating it. Sweeps, workdirs (config.json) and summaries keep
the Spec; a run turns it into typed arguments once (factorized/config/build.py, `RunArgs`),
which the model, costs, optimizer, summary and evaluators read. A Spec never changes: a
variant is a new Spec (`spec.replace(**{'model.embed.kind': 'svd'})`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any


def _frozen(value: Any) -> Any:
  if isinstance(value, Mapping):
    return Spec(value)
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(item) for item in value)
  return value


def _plain(value: Any) -> Any:
  if isinstance(value, Spec):
    return value.to_dict()
  if isinstance(value, tuple):
    return [_plain(item) for item in value]
  return value


class Spec(Mapping[str, Any]):
  """An immutable mapping whose fields read as attributes; sections are Specs, lists tuples."""

  __slots__ = ('_values',)

  def __init__(self, values: Mapping[str, Any] = ()):
    object.__setattr__(self, '_values', {str(k): _frozen(v) for k, v in dict(values).items()})

  def __getattr__(self, name: str) -> Any:
    try:
      return self._values[name]
    except KeyError:
      raise AttributeError(f'config has no field {name!r} (fields: '
                           f'{", ".join(sorted(self._values))})') from None

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError(f'a Spec is frozen: make a new one with .replace({name}=...)')

  def __getitem__(self, key: str) -> Any:
    return self._values[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __repr__(self) -> str:
    return f'Spec({self.to_dict()!r})'

  def __reduce__(self):  # picklable (submitit sends a point's Spec to its job)
    return Spec, (self.to_dict(),)

  def to_dict(self) -> dict[str, Any]:
    """Plain nested dicts and lists: what config.json holds."""
    return {key: _plain(value) for key, value in self._values.items()}

  def to_json(self, **kwargs) -> str:
    return json.dumps(self.to_dict(), **kwargs)

  def replace(self, **changes: Any) -> Spec:
    """A copy with `changes` applied, by dotted field name (`**{'train.lr': 1e-3}`); every
    name must exist."""
    values = self.to_dict()
    for name, value in changes.items():
      *parents, field = name.split('.')
      node = values
      for parent in parents:
        node = node.get(parent) if isinstance(node, dict) else None
      if not isinstance(node, dict) or field not in node:
        raise KeyError(name)
      value = _plain(value)
      if isinstance(node[field], float) and isinstance(value, int) and not isinstance(value,
                                                                                     bool):
        value = float(value)  # as a ConfigDict field does
      node[field] = value
    return Spec(values)
