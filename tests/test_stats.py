"""stats.py: the t-tests, the pooled sd, Holm's adjustment, against known values."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from factorized.analysis import stats

A = [174.6, 172.8, 175.2, 171.9]
B = [165.1, 164.8, 165.5]


def test_welch_matches_scipys_unequal_variance_t_test():
  test = stats.welch(A, B)
  expected = scipy_stats.ttest_ind(A, B, equal_var=False)
  assert test.difference == pytest.approx(np.mean(A) - np.mean(B))
  assert test.t == pytest.approx(expected.statistic)
  assert test.p == pytest.approx(expected.pvalue)
  assert test.df == pytest.approx(expected.df)
  assert test.real
  # One value on a side: no spread of its own, so untested.
  one = stats.welch([170.0], B)
  assert not one.tested and not one.real and math.isnan(one.p)


def test_the_pooled_test_of_two_groups_is_students_t_test():
  (mean_a, sd_a), (mean_b, sd_b) = stats.mean_sd(A), stats.mean_sd(B)
  pooled = stats.pooled_std([sd_a, sd_b], [len(A), len(B)])
  assert pooled.df == len(A) + len(B) - 2
  test = stats.compare(mean_a, len(A), mean_b, len(B), pooled)
  expected = scipy_stats.ttest_ind(A, B, equal_var=True)
  assert test.t == pytest.approx(expected.statistic)
  assert test.p == pytest.approx(expected.pvalue)
  # The threshold is where the test turns: t_{0.975, df} s sqrt(1/n_a + 1/n_b).
  threshold = scipy_stats.t.ppf(0.975, pooled.df) * pooled.s * math.sqrt(1 / 4 + 1 / 3)
  assert test.threshold == pytest.approx(threshold)
  assert stats.noise_threshold(pooled, 4, 3) == pytest.approx(threshold)


def test_the_pooled_sd_uses_only_groups_with_several_seeds():
  # sds 2 (3 seeds) and 4 (5 seeds), a one-seed group (NaN sd) left out:
  # s^2 = (2 * 4 + 4 * 16) / 6 = 12, df 6.
  pooled = stats.pooled_std([2.0, math.nan, 4.0], [3, 1, 5])
  assert pooled.df == 6 and pooled.s == pytest.approx(math.sqrt(12))
  # One seed against one: se = s sqrt(2); the 2.447 of t_{0.975, 6}, not a fixed 2.
  test = stats.compare(110.0, 1, 100.0, 1, pooled)
  assert test.standard_error == pytest.approx(math.sqrt(24))
  assert test.threshold == pytest.approx(2.4469 * math.sqrt(24), rel=1e-4)
  assert not test.real  # 10 is below 2.447 * 4.90 = 11.99: within seed noise
  assert stats.compare(112.5, 1, 100.0, 1, pooled).real
  none = stats.pooled_std([math.nan], [1])
  assert none.df == 0 and not stats.compare(1.0, 1, 2.0, 1, none).tested
  assert math.isnan(stats.noise_threshold(none, 1, 1))


def test_a_gap_that_moved_is_tested_over_its_four_means():
  pooled = stats.Pooled(s=2.0, df=10)
  # The gap goes from 38 (140 - 102) to 5 (100 - 95): moved by -33 over counts 1, 3, 1, 1.
  test = stats.difference_of_differences((140.0, 102.0, 100.0, 95.0), (1, 3, 1, 1), pooled)
  assert test.difference == pytest.approx(-33.0)
  assert test.standard_error == pytest.approx(2.0 * math.sqrt(1 + 1 / 3 + 1 + 1))
  assert test.t == pytest.approx(-33.0 / (2.0 * math.sqrt(10 / 3)))
  assert test.p == pytest.approx(2 * scipy_stats.t.sf(abs(test.t), 10))
  still = stats.difference_of_differences((103.0, 102.0, 96.0, 95.0), (1, 3, 1, 1), pooled)
  assert still.difference == pytest.approx(0.0) and not still.real


def test_holm_adjusts_a_textbook_family():
  # Holm (1979)'s step-down on p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005, 0.01,
  # 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, made monotone: 0.02, 0.03, 0.06,
  # 0.06. At 5%, the two smallest stay real.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2, then monotone
  # An untested comparison (NaN) stays NaN and is not counted in m.
  adjusted = stats.holm([0.01, math.nan, 0.02])
  assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
  assert adjusted[2] == pytest.approx(0.02)
  # t = 5, 2.5 and 2.3 on 10 df: p = 0.0005, 0.031 and 0.044, each real alone; adjusted
  # 0.0016, 0.062 and 0.062, so only the first stays real.
  tests = stats.adjust([stats.TTest(1.0, 0.2, 10), stats.TTest(1.0, 0.4, 10),
                        stats.TTest(2.3, 1.0, 10)])
  assert all(test.p < 0.05 for test in tests)
  assert tests[1].p_adjusted == pytest.approx(2 * tests[1].p)
  assert [test.real for test in tests] == [True, False, False]


def test_mean_sd_and_its_text():
  assert stats.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
  mean, sd = stats.mean_sd([5.0])
  assert mean == 5.0 and math.isnan(sd)
  assert stats.mean_sd_text(174.04, 1.62) == '174.0 ± 1.6'
  assert stats.mean_sd_text(174.04, math.nan) == '174.0'
  assert stats.mean_sd_text(math.nan, math.nan) == '-'
