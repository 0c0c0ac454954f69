"""A faster malloc for XLA on CPU: glibc tunables applied by re-exec'ing the process.

Why: an XLA CPU train step frees and re-allocates its large temporaries (the BxLxV
logits and their gradient, 134 MB each at B=16, L=128, V=16,384) on every step.
glibc serves blocks above its mmap threshold (capped at 32 MB) with mmap and returns
them with munmap, and XLA's worker threads allocate from per-thread arenas whose heaps
are at most 64 MB, so they fall back to mmap too: every step touches hundreds of MB of
fresh pages, and page faults take 16-29% of the CPU time. One arena, no mmap and no
trimming keep the freed memory in the heap for the next step:
  glibc.malloc.arena_max=1         every thread allocates from the main (brk) heap;
  glibc.malloc.mmap_max=0          never serve a request with mmap;
  glibc.malloc.trim_threshold=1T   never hand freed heap back to the OS (a 1 GiB threshold
                                   is not enough: the dense V=16,384 step's heap tops 1 GiB,
                                   so glibc trimmed it every few steps and the faults came back);
  glibc.malloc.top_pad=256M        grow the heap in large steps.
After a few steps the heap stops growing and a step takes no page faults at all
(133,000 per step without), which cuts the step's CPU time by about a fifth
(benchmarks/README.md). Cost: the process's RSS stays at its high-water mark, and all
threads share one malloc lock (no slowdown measured).

glibc reads GLIBC_TUNABLES only when a process starts, so `ensure_fast_malloc()`
re-execs the interpreter once, with the same command line (`sys.orig_argv`) and pid,
and the variable set. Call it first thing in a script's main module, before importing
jax (anything done before it runs twice). Subprocesses inherit the setting.

Turning it off: FACTORIZED_FAST_MALLOC=0 (or false/off/no). It also does nothing
when GLIBC_TUNABLES or LD_PRELOAD is already set (your own allocator choice wins),
off Linux/glibc, and in an interactive interpreter.
"""

from __future__ import annotations

import os
import sys

ENV_SWITCH = 'FACTORIZED_FAST_MALLOC'
# Set in the re-exec'd process, so that it never re-execs again.
ENV_APPLIED = '_FACTORIZED_FAST_MALLOC_APPLIED'
TUNABLES = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
            'glibc.malloc.trim_threshold=1099511627776:glibc.malloc.top_pad=268435456')
_OFF = ('0', 'false', 'off', 'no')
_MIN_GLIBC = (2, 26)  # the first glibc with GLIBC_TUNABLES


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the running glibc, or None when the C library is not glibc."""
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()  # 'glibc 2.36'
    major, minor = version.split('.')[:2]
    return (int(major), int(minor)) if name == 'glibc' else None
  except (AttributeError, ValueError, OSError, TypeError):
    return None


def fast_malloc_plan(environ: dict[str, str] | None = None) -> str | None:
  """Why the process is left alone ('disabled by ...'), or None when it should re-exec."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV_SWITCH, '1').strip().lower() in _OFF:
    return f'disabled by {ENV_SWITCH}={environ[ENV_SWITCH]}'
  if environ.get(ENV_APPLIED) == '1':
    return 'already applied'
  if environ.get('GLIBC_TUNABLES') or environ.get('LD_PRELOAD'):
    return 'GLIBC_TUNABLES or LD_PRELOAD already set by the user'
  if not sys.platform.startswith('linux'):
    return f'not Linux ({sys.platform})'
  version = glibc_version()
  if version is None or version < _MIN_GLIBC:
    return f'needs glibc >= 2.26 (found {version})'
  if hasattr(sys, 'ps1') or sys.flags.interactive or not getattr(sys, 'orig_argv', None):
    return 'interactive interpreter'
  return None


def fast_malloc_active() -> bool:
  """True when this process started with the tunables of this module."""
  return os.environ.get('GLIBC_TUNABLES') == TUNABLES


def ensure_fast_malloc() -> None:
  """Re-execs this process once with TUNABLES in GLIBC_TUNABLES (see the module docstring).

  Returns normally when nothing is to be done; otherwise it does not return (the
  process image is replaced and the script starts again from the top).
  """
  if fast_malloc_plan() is not None:
    return
  env = dict(os.environ, GLIBC_TUNABLES=TUNABLES, **{ENV_APPLIED: '1'})
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
