"""Where factorized keeps what it computes once and reuses: under the cache root,
`corpora/` (the tokenised corpora, factorized/data/pipeline.py) and `jax/` (compiled
programs, factorized/runtime/compile_cache.py)."""

from __future__ import annotations

import os
import pathlib


def cache_root(data_config) -> pathlib.Path:
  """data.cache_dir, else $FACTORIZED_CACHE_DIR, else ~/.cache/factorized."""
  root = data_config.get('cache_dir', '') or os.environ.get('FACTORIZED_CACHE_DIR', '')
  return pathlib.Path(root or '~/.cache/factorized').expanduser()
