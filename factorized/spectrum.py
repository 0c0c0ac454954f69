"""Spectral statistics of an embedding table given as a product of factors.

Shapes: V vocabulary, D model width, K_i the inner widths of the factors
(E for albert, R for svd; see `factors()` in embeddings.py).

For F = F_1 F_2 ... F_n (F_1: VxK_1, F_n: K_{n-1}xD), take the reduced QR
F_1 = Q_1 R_1 and the LQ form F_n = L_n Q_n (QR of F_n^T). Q_1 has orthonormal
columns and Q_n orthonormal rows, so F and the small core C = R_1 F_2 ... L_n
share their singular values; only C (at most K_1xK_{n-1}) is decomposed, and
the VxD table is never formed.

Statistics of a singular-value vector s (descending):
  stable_rank            sum s_i^2 / s_1^2 (Rudelson & Vershynin 2007);
  entropy_effective_rank exp(H(p)), p_i = s_i / sum s_j (Roy & Vetterli 2007);
  cumulative_energy      c_k = sum_{i<=k} s_i^2 / sum s_i^2;
  rank_for_energy        the smallest k with c_k >= fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def singular_values(factors: Sequence[ArrayLike]) -> jax.Array:
  """The singular values (descending, 1-D) of factors[0] @ ... @ factors[-1], via QR."""
  factors = [jnp.asarray(f) for f in factors]
  if not factors:
    raise ValueError('singular_values needs at least one factor, got none.')
  for left, right in zip(factors[:-1], factors[1:], strict=False):
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
      raise ValueError(f'Factors of shapes {left.shape} and {right.shape} do not chain.')
  if len(factors) == 1:
    return jnp.linalg.svd(factors[0], compute_uv=False)
  r_first = jnp.linalg.qr(factors[0], mode='r')         # min(V, K_1) x K_1
  l_last = jnp.linalg.qr(factors[-1].T, mode='r').T     # K_{n-1} x min(D, K_{n-1})
  core = r_first
  for middle in factors[1:-1]:
    core = core @ middle
  return jnp.linalg.svd(core @ l_last, compute_uv=False)


def _as_sv(sv: ArrayLike) -> np.ndarray:
  sv = np.asarray(sv, np.float64)
  if sv.ndim != 1 or sv.size == 0 or np.any(sv < 0):
    raise ValueError(f'Expected a non-empty 1-D array of singular values, got shape {sv.shape}.')
  return sv


def stable_rank(sv: ArrayLike) -> float:
  """sum s^2 / max s^2 (0 for an all-zero spectrum)."""
  sv = _as_sv(sv)
  top = sv.max()
  return float(np.sum(sv**2) / top**2) if top > 0 else 0.0


def entropy_effective_rank(sv: ArrayLike) -> float:
  """exp of the Shannon entropy of s / sum(s) (0 for an all-zero spectrum)."""
  sv = _as_sv(sv)
  total = sv.sum()
  if total == 0:
    return 0.0
  p = sv[sv > 0] / total
  return float(np.exp(-np.sum(p * np.log(p))))


def cumulative_energy(sv: ArrayLike) -> np.ndarray:
  """c_k = sum_{i<=k} s_i^2 / sum s^2 for s sorted in descending order."""
  sv = np.sort(_as_sv(sv))[::-1]
  energy = np.cumsum(sv**2)
  return energy / energy[-1] if energy[-1] > 0 else np.zeros_like(energy)


def rank_for_energy(sv: ArrayLike, fraction: float) -> int:
  """The smallest number of top singular values holding `fraction` of the energy."""
  if not 0 < fraction <= 1:
    raise ValueError(f'fraction={fraction!r} must lie in (0, 1].')
  energy = cumulative_energy(sv)
  # A small tolerance so that fraction=1 is reached despite rounding.
  return int(min(np.searchsorted(energy, fraction - 1e-12) + 1, energy.size))
