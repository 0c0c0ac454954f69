"""The class of machine whose float32 bits a run reproduces: XLA:CPU's code-generation target.

Why: XLA:CPU compiles for the host's instruction set, and the vector width, fused
multiply-adds and library kernels it picks change float32 rounding, so one program rounds
differently on an AVX2 and an AVX-512 CPU. A number reproduces bitwise only within one
class of machine, and `fingerprint()` names that class: the architecture, the SIMD features
that change code generation (from /proc/cpuinfo on Linux; `platform.processor()`
elsewhere), an `--xla_cpu_max_isa=` cap in XLA_FLAGS (a capped run compiles as for an older
CPU, so it is a class of its own), the jaxlib version, the JAX backend and its device count.
The id is short and stable, `<arch>-<top SIMD level>[-max<cap>]-<8 hex of the
description's hash>`: `x86_64-avx512-1a2b3c4d`. The tests keep their pinned numbers per
class (tests/pins.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import re

import jax

CPUINFO = pathlib.Path('/proc/cpuinfo')

# The /proc/cpuinfo features XLA:CPU's code generation and kernel choice depend on (x86's
# `flags`, Arm's `Features`). Everything else there (caches, virtualisation, security
# mitigations) leaves the numbers alone and would split one class into many.
SIMD_FEATURE = re.compile(r'sse4_2|avx|avx2|fma|f16c|avx512\w*|avx_vnni\w*|amx\w*'
                          r'|asimd\w*|sve\w*|fphp|bf16|i8mm')
# (feature, label) from the highest level down: the id's label is the first one present.
LEVELS = (('avx512f', 'avx512'), ('avx2', 'avx2'), ('avx', 'avx'), ('sse4_2', 'sse4_2'),
          ('sve2', 'sve2'), ('sve', 'sve'), ('asimd', 'asimd'))


def simd_features(cpuinfo: str) -> list[str]:
  """The SIMD features on the first `flags` (x86) or `Features` (Arm) line of a
  /proc/cpuinfo text, sorted; [] when there is none."""
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() in ('flags', 'Features'):
      return sorted({name for name in value.split() if SIMD_FEATURE.fullmatch(name)})
  return []


def max_isa(xla_flags: str) -> str | None:
  """The value of the last `--xla_cpu_max_isa=` in an XLA_FLAGS string (XLA takes the last
  one), or None."""
  values = re.findall(r'--xla_cpu_max_isa=(\S+)', xla_flags)
  return values[-1] if values else None


def describe() -> dict:
  """What XLA compiles for in this process: the machine class, as a JSON-able dict."""
  description = {'arch': platform.machine()}
  if CPUINFO.exists():
    description['simd'] = simd_features(CPUINFO.read_text())
  else:  # macOS, Windows: no feature list without a platform-specific probe
    description['processor'] = platform.processor()
  description.update(
      xla_cpu_max_isa=max_isa(os.environ.get('XLA_FLAGS', '')),
      jaxlib=importlib.metadata.version('jaxlib'),
      backend=jax.default_backend(),
      device_count=jax.device_count(),
  )
  return description


def machine_id(description: dict) -> str:
  """The short id of a description: its architecture, top SIMD level and ISA cap (for a
  reader) and 8 hex digits of its hash (what tells classes apart)."""
  features = set(description.get('simd') or ())
  level = next((label for feature, label in LEVELS if feature in features), 'generic')
  parts = [description['arch'] or 'unknown', level]
  if description.get('xla_cpu_max_isa'):
    parts.append('max' + description['xla_cpu_max_isa'])
  digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:8]
  return '-'.join(re.sub(r'[^a-z0-9_]+', '_', part.lower()) for part in parts) + '-' + digest


def fingerprint() -> tuple[str, dict]:
  """(id, description) of this process's machine class: `describe()` and its `machine_id`."""
  description = describe()
  return machine_id(description), description
