"""summary.json: the one record of a finished run that sweeps, notebooks and tools read."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import jax

from factorized import files
from factorized.config.build import RunArgs
from factorized.model import costs

SUMMARY_FILE = 'summary.json'
_VERSIONED = ('jax', 'flax', 'optax', 'orbax-checkpoint')


def package_versions() -> dict[str, str]:
  """Installed versions of the packages whose behaviour the numbers depend on."""
  return {name: importlib.metadata.version(name) for name in _VERSIONED}


def device_info() -> dict[str, Any]:
  """The accelerator kind and the global device count."""
  return {'kind': jax.devices()[0].device_kind, 'count': jax.device_count(),
          'platform': jax.default_backend(), 'processes': jax.process_count()}


def build_summary(
    args: RunArgs,
    config: dict[str, Any],
    **results: Any,
) -> dict[str, Any]:
  """The summary of a run: its saved `config` (config.json's dict), sizes and costs from its
  `args` (`params`, the vocabulary tables' `bytes` as stored, `flops_per_token`),
  environment, plus `results`."""
  return {
      'config': config,
      'vocab_size': args.model.vocab_size,
      'params': costs.param_counts(args.model),
      'bytes': costs.vocab_bytes(args.model),
      'flops_per_token': costs.flops_per_token(args.model),
      'devices': device_info(),
      'versions': package_versions(),
      **results,
  }


def write_summary(workdir: str | os.PathLike, summary: dict[str, Any]) -> None:
  """Writes workdir/summary.json atomically, from process 0 only."""
  if jax.process_index() == 0:
    files.write_json_atomic(os.path.join(workdir, SUMMARY_FILE), summary)
