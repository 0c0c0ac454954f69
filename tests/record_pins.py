"""Records the runlocal pins of this machine class: `python -m tests.record_pins [--force]`.

Runs every pinned kind's `configs/brown.py:kind=K,rank=8,runlocal` on one device, in the
test suite's environment (tests/conftest.py: its XLA flags appended to any in XLA_FLAGS, 8
fake CPU devices), and writes tests/data/pins/runlocal_summaries.<machine id>.json: the
machine's description and, per kind, the numbers the reference file pins (tests/pins.py).
From then on the pin test compares this class bitwise. Reads brown.zip from
$FACTORIZED_DATA_DIR, as the tests do. An existing file of this class is kept unless
--force: rewriting pins is a decision, to be committed with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

# The suite's XLA flags, devices and compile cache: set before JAX is first imported.
from tests import conftest  # noqa: F401

# isort: split
from factorized.runtime import machine
from tests import pins


def main(argv: list[str] | None = None) -> int:
  """Records (or with --force re-records) this machine class's pin file."""
  parser = argparse.ArgumentParser(prog='python -m tests.record_pins', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--force', action='store_true',
                      help="overwrite this machine class's existing pin file")
  args = parser.parse_args(argv)
  machine_id, description = machine.fingerprint()
  path = pins.path_of(machine_id)
  if path.exists() and not args.force:
    sys.exit(f'{path} exists: the pins of machine class {machine_id} are recorded; '
             'rerun with --force to overwrite them')
  reference = pins.reference()
  summaries = {}
  for kind in pins.KINDS:
    print(f'{machine_id}: configs/brown.py:{pins.config_arg(kind)}', flush=True)
    with tempfile.TemporaryDirectory() as workdir:
      summary = pins.run(kind, workdir)
    # JSON and back: the floats as the test reads them from the file.
    summaries[kind] = json.loads(json.dumps(pins.pinned_part(summary, reference[kind])))
  path.write_text(json.dumps({'machine': description, 'summaries': summaries}, indent=1,
                             sort_keys=True) + '\n')
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
