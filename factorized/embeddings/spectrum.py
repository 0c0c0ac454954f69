r"""Spectra of an embedding table given as a product of factors, and their statistics.

Shapes: V vocabulary, D model width, K_i the inner widths of the factors (see each kind's
`factors()` in factorized/embeddings/), K the number of singular values, R a rank.

The one factored SVD (`factored_svd`; `singular_values` is its case without U and V): for
F = F_1 F_2 ... F_n (F_1: VxK_1, F_n: K_{n-1}xD), take the reduced QR F_1 = Q_1 R_1 and
F_n^T = Q_n R_n. Q_1 has orthonormal columns and Q_n^T orthonormal rows, so F and the small
core C = R_1 F_2 ... R_n^T share their singular values; only C (at most K_1xK_{n-1}) is
decomposed, C = U_c diag(s) V_c^T, and U = Q_1 U_c, V^T = V_c^T Q_n^T. The VxD table is
never formed. It runs in the factors' precision: float32 in training (the spectrum logged
at every evaluation), float64 in notebooks. Each column of U is signed so that its
largest-magnitude entry is positive (a deterministic choice).

Statistics of a singular-value vector s (descending):
  stable_rank            sum s_i^2 / s_1^2 (Rudelson & Vershynin 2007);
  entropy_effective_rank exp(H(p)), p_i = s_i / sum s_j (Roy & Vetterli 2007);
  cumulative_energy      c_k = sum_{i<=k} s_i^2 / sum s_i^2;
  rank_for_energy        the smallest k with c_k >= fraction;
  reconstruction_error   |W - W_R|_F / |W|_F of the best rank-R approximation W_R,
                         sqrt(sum_{i>R} s_i^2 / sum s_i^2) (Eckart-Young);
and `spectrum_table`, one row of them per embedding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.typing import ArrayLike

ENERGY_FRACTIONS = (0.9, 0.99)


def _precision(factors: Sequence[ArrayLike]):
  """float64 factors: a context with 64-bit JAX types (else they would be cast to float32)."""
  wide = any(np.dtype(getattr(f, 'dtype', np.float32)) == np.float64 for f in factors)
  return jax.enable_x64(True) if wide else contextlib.nullcontext()


def factored_svd(factors: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The thin SVD (U_VxK, s_K, Vt_KxD) of factors[0] @ ... @ factors[-1] via QR of the
  factors (see the module docstring), host arrays in the factors' precision."""
  with _precision(factors):
    return tuple(np.asarray(a) for a in _factored_svd(factors, compute_uv=True))


def _factored_svd(factors: Sequence[ArrayLike], compute_uv: bool):
  factors = [jnp.asarray(f) for f in factors]
  if not factors:
    raise ValueError('factored_svd needs at least one factor, got none.')
  for left, right in zip(factors[:-1], factors[1:], strict=False):
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
      raise ValueError(f'Factors of shapes {left.shape} and {right.shape} do not chain.')
  if len(factors) == 1:
    if not compute_uv:
      return jnp.linalg.svd(factors[0], compute_uv=False)
    u_VxK, s_K, vt_KxD = jnp.linalg.svd(factors[0], full_matrices=False)
  else:
    if compute_uv:
      q_first, r_first = jnp.linalg.qr(factors[0])    # Q: V x K_1, R: K_1 x K_1
      q_last, r_last = jnp.linalg.qr(factors[-1].T)   # Q: D x K_{n-1}
    else:
      r_first = jnp.linalg.qr(factors[0], mode='r')   # min(V, K_1) x K_1
      r_last = jnp.linalg.qr(factors[-1].T, mode='r')
    core = r_first
    for middle in factors[1:-1]:
      core = core @ middle
    core = core @ r_last.T
    if not compute_uv:
      return jnp.linalg.svd(core, compute_uv=False)
    u_core, s_K, vt_core = jnp.linalg.svd(core, full_matrices=False)
    u_VxK, vt_KxD = q_first @ u_core, vt_core @ q_last.T
  signs_K = jnp.sign(u_VxK[jnp.argmax(jnp.abs(u_VxK), axis=0), jnp.arange(u_VxK.shape[1])])
  signs_K = jnp.where(signs_K == 0, 1.0, signs_K).astype(u_VxK.dtype)
  return u_VxK * signs_K, s_K, vt_KxD * signs_K[:, None]


def singular_values(factors: Sequence[ArrayLike]) -> jax.Array:
  """The singular values (descending, 1-D) of factors[0] @ ... @ factors[-1], via QR (the
  factored SVD without U and V), in the factors' precision."""
  with _precision(factors):
    return _factored_svd(factors, compute_uv=False)


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


def reconstruction_error(singular_values: ArrayLike,
                         ranks: Sequence[int] | None = None) -> np.ndarray:
  """|W - W_R|_F / |W|_F of the best rank-R approximation, for each R in `ranks` (default
  0..K), from the singular values alone (Eckart-Young: sqrt(sum_{i>R} s_i^2 / sum s_i^2))."""
  sv = np.sort(np.asarray(singular_values, np.float64))[::-1]
  tail_energy = np.concatenate([np.cumsum((sv**2)[::-1])[::-1], [0.0]])  # index R: sum_{i>R}
  ranks = np.arange(sv.size + 1) if ranks is None else np.asarray(ranks)
  if np.any(ranks < 0) or np.any(ranks > sv.size):
    raise ValueError(f'ranks {list(ranks)} must lie in [0, {sv.size}] (the number of '
                     'singular values).')
  total = tail_energy[0]
  return np.sqrt(tail_energy[ranks] / total) if total > 0 else np.zeros(len(ranks))


def energy_column(fraction: float) -> str:
  """spectrum_table's column of the rank holding `fraction` of the energy: 'rank_90' etc."""
  return f'rank_{100 * fraction:g}'


def spectrum_table(singular_values_by_name: Mapping[str, ArrayLike],
                   fractions: Sequence[float] = ENERGY_FRACTIONS) -> pd.DataFrame:
  """One row per embedding: number of singular values, largest one, stable rank, entropy
  effective rank, and (columns energy_column(f)) the rank holding each of `fractions` of the
  energy sum s^2."""
  rows = {}
  for name, sv in singular_values_by_name.items():
    sv = np.asarray(sv, np.float64)
    row = {'singular_values': sv.size, 'sigma_max': float(sv.max()),
           'stable_rank': stable_rank(sv), 'entropy_effective_rank': entropy_effective_rank(sv)}
    row.update({energy_column(fraction): rank_for_energy(sv, fraction)
                for fraction in fractions})
    rows[name] = row
  return pd.DataFrame.from_dict(rows, orient='index')
