"""Statistics against values computed by hand or taken from printed t tables."""

from __future__ import annotations

import math

import pytest

from simam_paddle.stats import diff_ci, mean, mean_ci, std, t_quantile


def test_mean_and_sample_std_by_hand():
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert mean(xs) == 5.0
    # squared deviations sum to 32; sample variance 32 / 7
    assert std(xs) == pytest.approx(math.sqrt(32 / 7))
    assert std([3.0]) == 0.0


@pytest.mark.parametrize("df, value", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_printed_tables(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)


def test_t_quantile_is_symmetric_and_tends_to_normal():
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5), abs=1e-9)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)


def test_mean_ci_for_a_known_sample():
    # [0.84, 0.85, 0.86]: mean 0.85, std 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3) = 0.0248414
    m, lo, hi = mean_ci([0.84, 0.85, 0.86])
    assert m == pytest.approx(0.85)
    assert hi - m == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert m - lo == pytest.approx(hi - m)


def test_mean_ci_of_one_value_has_no_interval():
    m, lo, hi = mean_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)


def test_welch_interval_by_hand():
    a, b = [0.86, 0.87, 0.88], [0.84, 0.85, 0.86]
    # equal variances 1e-4 and n = 3 each: se = sqrt(2e-4 / 3), Welch df = 4
    d, lo, hi = diff_ci(a, b)
    assert d == pytest.approx(0.02)
    assert hi - d == pytest.approx(2.776445 * math.sqrt(2e-4 / 3), rel=1e-5)
