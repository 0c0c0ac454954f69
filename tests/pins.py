"""The runlocal numbers the tests pin, one file per machine class.

`configs/brown.py:kind=K,rank=8,runlocal` on one device, every kind, under the suite's XLA
flags (tests/conftest.py): losses, perplexities, band perplexities, parameter and FLOP
counts. tests/data/pins/runlocal_summaries.<machine id>.json holds the description of the
class that recorded it (factorized/runtime/machine.py) and its summaries. A class with its
own file reproduces it bitwise. Any other class computes the same maths with other float32
rounding (XLA:CPU emits other kernels for another instruction set), so it is compared with
the reference file, the class of REFERENCE_ID, within RTOL: wide enough for rounding, far
too narrow for a changed number. `python -m tests.record_pins` records a new class's file.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterator

import jax

from configs import brown
from factorized.config import build
from factorized.runtime import parallel
from factorized.train import trainer

PINS_DIR = pathlib.Path(__file__).resolve().parent / 'data' / 'pins'
# A 2-core AMD EPYC VM with AVX-512, jaxlib 0.10.2, 8 fake CPU devices: the class the pins
# were first recorded on.
REFERENCE_ID = 'x86_64-avx512-e7b50cf4'
# Another class rounds differently (a 2-core AMD EPYC with AVX2 only: dense valid_ppl
# 435.3600856112672 against the reference's 435.360081359704, 1e-8 relative), a hundred
# times less than this; a changed computation moves the numbers by far more.
RTOL = 1e-6


def path_of(machine_id: str) -> pathlib.Path:
  """Where the pins of a machine class live."""
  return PINS_DIR / f'runlocal_summaries.{machine_id}.json'


def load(machine_id: str) -> dict | None:
  """The pinned summaries of a machine class, by kind; None when it has no file."""
  path = path_of(machine_id)
  return json.loads(path.read_text())['summaries'] if path.exists() else None


def reference() -> dict:
  """The reference class's pinned summaries, by kind."""
  return load(REFERENCE_ID)


KINDS = sorted(reference())


def config_arg(kind: str) -> str:
  """The configs/brown.py argument of a kind's pinned run."""
  return f'kind={kind},rank=8,runlocal'


def run(kind: str, workdir: str) -> dict:
  """Trains and evaluates a kind's pinned run in `workdir` on one device; its summary."""
  config = build.from_config(brown.get_config(config_arg(kind)))
  return trainer.train_and_evaluate(config, str(workdir),
                                    mesh=parallel.make_mesh(jax.devices()[:1]))


def pinned_part(value, pinned):
  """`value` restricted to the keys of `pinned`, recursively (numbers added since, such as
  a new metric of each band, are not pinned)."""
  if isinstance(pinned, dict):
    value = value if isinstance(value, dict) else {}
    return {key: pinned_part(value.get(key), sub) for key, sub in pinned.items()}
  return value


def _leaves(value, pinned, path: str = '') -> Iterator[tuple[str, object, object]]:
  """(path, value, pinned) for every leaf of `pinned`, with `value`'s at the same path."""
  if isinstance(pinned, dict):
    value = value if isinstance(value, dict) else {}
    for key, sub in pinned.items():
      yield from _leaves(value.get(key), sub, f'{path}.{key}' if path else key)
  else:
    yield path, value, pinned


def _is_float(x) -> bool:
  return isinstance(x, float)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def relative_difference(value, pinned) -> float:
  """|value - pinned| / |pinned| of two floats (0 when equal, inf when only pinned is 0)."""
  if value == pinned:
    return 0.0
  return abs(value - pinned) / abs(pinned) if pinned else math.inf


def mismatches(value, pinned, rtol: float) -> list[str]:
  """Where `value` is not `pinned` within float rounding, one line each: floats within
  `rtol` relative to the pin; integers (counts, steps) exactly; None stays None."""
  wrong = []
  for path, got, want in _leaves(value, pinned):
    if _is_float(want) and (_is_float(got) or _is_int(got)):
      ok = relative_difference(got, want) <= rtol
    elif want is None or _is_int(want):
      ok = type(got) is type(want) and got == want
    else:  # a string or a list: exactly
      ok = got == want
    if not ok:
      detail = (f' (relative difference {relative_difference(got, want):.2e})'
                if _is_float(want) and isinstance(got, (int, float)) else '')
      wrong.append(f'{path}: {got!r}, pinned {want!r}{detail}')
  return wrong


def largest_relative_difference(value, pinned) -> tuple[float, str]:
  """(the largest relative difference over the pinned floats, the first path with it)."""
  return max(((relative_difference(got, want), path) for path, got, want in _leaves(value, pinned)
              if _is_float(want) and isinstance(got, (int, float))),
             key=lambda pair: pair[0], default=(0.0, ''))
