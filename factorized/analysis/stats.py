r"""Statistics for comparing points over seeds: mean and sample sd, t-tests, Holm.

A point is a configuration trained with one or several seeds; its seeds' values (test
perplexity, say) are a sample of its seed noise. Two ways to test a difference of means:

- Welch's t-test (`welch`) when both sides have their own samples: no assumption that the
  two spreads are equal; degrees of freedom by Welch–Satterthwaite.
- The pooled-variance t-test (`compare`, `contrast`) when most points have one seed, so a
  side has no spread of its own: s is pooled over every group with several seeds,
  s^2 = sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1), with df = sum_g (n_g - 1), assuming one
  seed-noise level across points. A contrast of means with coefficients +-1 (a - b; or a
  gap that moved, (a2 - b2) - (a1 - b1)) has standard error s sqrt(sum_i 1 / n_i) and is
  real at level alpha beyond t_{1 - alpha/2, df} times it (`noise_threshold`).

`holm` adjusts the p-values of a family of tests (Holm–Bonferroni step-down), so that the
chance of calling any true null real stays at most alpha across the family.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # two-sided level of every test


@dataclasses.dataclass(frozen=True)
class TTest:
  """A t-test of `difference` (a - b, or a contrast of means) with its standard error and
  degrees of freedom; `p_adjusted` (Holm's, over a family) decides `real` when set."""

  difference: float
  standard_error: float
  df: float
  p_adjusted: float | None = None
  alpha: float = ALPHA

  @property
  def tested(self) -> bool:
    """Whether there was any seed noise to test against (a finite, positive error)."""
    return (math.isfinite(self.standard_error) and self.standard_error > 0
            and math.isfinite(self.df) and self.df > 0)

  @property
  def t(self) -> float:
    """The t statistic, difference / standard error (NaN when untested)."""
    return self.difference / self.standard_error if self.tested else math.nan

  @property
  def p(self) -> float:
    """The two-sided p-value of this test alone (NaN when untested)."""
    return float(2 * scipy_stats.t.sf(abs(self.t), self.df)) if self.tested else math.nan

  @property
  def threshold(self) -> float:
    """The smallest |difference| this test alone calls real: t_{1-alpha/2, df} * error."""
    if not self.tested:
      return math.nan
    return float(scipy_stats.t.ppf(1 - self.alpha / 2, self.df)) * self.standard_error

  @property
  def real(self) -> bool:
    """Whether the difference is beyond seed noise: (adjusted) p below alpha."""
    p = self.p if self.p_adjusted is None else self.p_adjusted
    return self.tested and p < self.alpha


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample standard deviation, ddof 1) of `values`; sd NaN for one value, both NaN
  for none."""
  values = np.asarray(values, float)
  if values.size == 0:
    return math.nan, math.nan
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan


def mean_sd_text(mean: float, sd: float, digits: int = 1) -> str:
  """'174.0 ± 1.6', '174.0' (sd NaN: one seed) or '-' (no mean)."""
  if not math.isfinite(mean):
    return '-'
  return f'{mean:.{digits}f} ± {sd:.{digits}f}' if math.isfinite(sd) else f'{mean:.{digits}f}'


def welch(a: Sequence[float], b: Sequence[float]) -> TTest:
  """Welch's t-test of mean(a) - mean(b), each side with its own variance; df by
  Welch–Satterthwaite. Untested (NaN error) when a side has fewer than two values."""
  (mean_a, sd_a), (mean_b, sd_b) = mean_sd(a), mean_sd(b)
  n_a, n_b = len(a), len(b)
  if n_a < 2 or n_b < 2:
    return TTest(mean_a - mean_b, math.nan, math.nan)
  va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
  denominator = va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)
  df = (va + vb) ** 2 / denominator if denominator > 0 else math.nan
  return TTest(mean_a - mean_b, math.sqrt(va + vb), df)


@dataclasses.dataclass(frozen=True)
class Pooled:
  """A pooled sample standard deviation `s` and its degrees of freedom `df` (0: none)."""

  s: float
  df: int


def pooled_std(sds: Sequence[float], counts: Sequence[int]) -> Pooled:
  """s pooled over the groups with at least two values (sample sd `sds`, sizes `counts`):
  s^2 = sum (n - 1) sd^2 / sum (n - 1), df = sum (n - 1); NaN and 0 where none has two."""
  pairs = [(float(sd), int(n)) for sd, n in zip(sds, counts, strict=True)
           if int(n) > 1 and math.isfinite(float(sd))]
  df = sum(n - 1 for _, n in pairs)
  if df == 0:
    return Pooled(math.nan, 0)
  return Pooled(math.sqrt(sum((n - 1) * sd ** 2 for sd, n in pairs) / df), df)


def contrast(difference: float, counts: Sequence[int], pooled: Pooled) -> TTest:
  """The pooled t-test of a +-1 contrast of means (`difference`, the means' seed `counts`):
  standard error s sqrt(sum 1/n), df the pooled sd's."""
  error = pooled.s * math.sqrt(sum(1 / n for n in counts)) if pooled.df else math.nan
  return TTest(difference, error, pooled.df or math.nan)


def compare(mean_a: float, n_a: int, mean_b: float, n_b: int, pooled: Pooled) -> TTest:
  """The pooled t-test of mean_a - mean_b over n_a and n_b seeds."""
  return contrast(mean_a - mean_b, (n_a, n_b), pooled)


def difference_of_differences(means: tuple[float, float, float, float],
                              counts: tuple[int, int, int, int], pooled: Pooled) -> TTest:
  """Whether a gap moved: the pooled t-test of (a2 - b2) - (a1 - b1) for means
  (a1, b1, a2, b2) over their seed counts."""
  a1, b1, a2, b2 = means
  return contrast((a2 - b2) - (a1 - b1), counts, pooled)


def noise_threshold(pooled: Pooled, *counts: int, alpha: float = ALPHA) -> float:
  """The smallest |contrast| of means over these seed counts called real at `alpha`:
  t_{1-alpha/2, df} s sqrt(sum 1/n) (NaN without a pooled sd)."""
  if not pooled.df:
    return math.nan
  quantile = float(scipy_stats.t.ppf(1 - alpha / 2, pooled.df))
  return quantile * pooled.s * math.sqrt(sum(1 / n for n in counts))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm–Bonferroni adjusted p-values, in the order given: the k-th smallest of m is
  multiplied by m - k + 1, made non-decreasing in that order and capped at 1. NaN (an
  untested comparison) stays NaN and does not count in m."""
  p = np.asarray(p_values, float)
  tested = np.flatnonzero(np.isfinite(p))
  adjusted = np.full(p.shape, math.nan)
  order = tested[np.argsort(p[tested], kind='stable')]
  running = 0.0
  for k, index in enumerate(order):
    running = max(running, min(1.0, (len(order) - k) * p[index]))
    adjusted[index] = running
  return adjusted.tolist()


def adjust(tests: Sequence[TTest]) -> list[TTest]:
  """`tests` as one family: each with its Holm-adjusted p-value."""
  adjusted = holm([test.p for test in tests])
  return [dataclasses.replace(test, p_adjusted=p) for test, p in
          zip(tests, adjusted, strict=True)]
