"""Plug-in packages (embedding kinds, corpora): each module of the package registers itself
when imported, so a package imports all of its modules once, here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_all(package: str, path: Iterable[str], *, skip: tuple[str, ...] = ('base',)) -> None:
  """Imports every module of `package` (its `__path__`) but `skip`: each registers itself."""
  for module in pkgutil.iter_modules(path):
    if module.name not in skip:
      importlib.import_module(f'{package}.{module.name}')
