"""XLA's persistent compilation cache for training and evaluation runs.

Why: compiling the steps is a large part of starting a run (a `:gpu` run on an H200 waited
85-92 s for its first step at each start; the cache saves the Brown default about 10 s on
a 2-core CPU), and it is paid again at every start: a resumed or requeued job, another seed
of a sweep point, an eval.py of the same shapes. With the cache, a start whose programs
were compiled before loads them from disk. A cache hit is the same executable (the key
hashes the program, the compile options, XLA_FLAGS, the backend and the jax version), so
nothing a run computes changes. On a GPU, JAX also keeps XLA's per-fusion autotuning
results under the same folder (jax_persistent_cache_enable_xla_caches, on by default), so
a run with other programs but the same matmuls (another point of a sweep: the same blocks)
reuses their autotuning, which is most of a GPU compile (results/bench_h200: 61-84 s per
train step on an H200, 11 s with the autotuner off).

Where: <cache root>/jax, the cache root being data.cache_dir, else $FACTORIZED_CACHE_DIR,
else ~/.cache/factorized (the corpora's too: factorized/cache.py). Only programs that took at
least a second to compile are kept. Delete the folder to reclaim its space.

Turning it off: FACTORIZED_COMPILE_CACHE=0 (or false/off/no). JAX's own setting wins: with
JAX_COMPILATION_CACHE_DIR set (or jax.config's jax_compilation_cache_dir), that cache is used.
"""

from __future__ import annotations

import os

import jax

from factorized import cache

ENV_SWITCH = 'FACTORIZED_COMPILE_CACHE'
_OFF = ('0', 'false', 'off', 'no')


def enable(data_config) -> str | None:
  """Points JAX's persistent compilation cache at <cache root>/jax unless it is switched
  off or already configured; call before the process compiles anything. Returns the
  cache directory in use (None: no cache)."""
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured
  if os.environ.get(ENV_SWITCH, '1').strip().lower() in _OFF:
    return None
  directory = str(cache.cache_root(data_config) / 'jax')
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory
