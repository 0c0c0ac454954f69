"""Files written atomically: through a temporary file and a rename, so a reader (or a job
killed half-way) never sees half a file."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to `path` through a temporary file and a rename: never half-written."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as JSON atomically (write_atomic)."""
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')
