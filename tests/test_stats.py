import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from vitlib.stats import mcnemar, mean_std, wilson_interval


@pytest.mark.parametrize("correct,total", [(9312, 10000), (81, 263), (0, 50), (50, 50)])
def test_wilson_interval_inverts_the_score_test(correct, total):
    """The Wilson interval is the set of p whose score test does not reject: find its ends by root-finding."""
    z, phat = norm.ppf(0.975), correct / total
    score = lambda p: abs(phat - p) - z * math.sqrt(p * (1 - p) / total)  # noqa: E731
    lo = 0.0 if correct == 0 else brentq(score, 1e-12, phat - 1e-12)
    hi = 1.0 if correct == total else brentq(score, phat + 1e-12, 1 - 1e-12)
    got = wilson_interval(correct, total)
    assert got == pytest.approx((lo, hi), abs=1e-9)


def test_mcnemar_counts_discordant_pairs_and_matches_the_binomial_definition():
    a = np.array([1] * 50 + [0] * 10 + [1] * 3 + [0] * 37, bool)
    b = np.array([1] * 50 + [1] * 10 + [0] * 3 + [0] * 37, bool)
    got = mcnemar(a, b)
    assert (got["a_only_right"], got["b_only_right"], got["discordant"]) == (3, 10, 13)
    expected = min(1.0, 2 * sum(math.comb(13, k) for k in range(0, 4)) / 2**13)
    assert got["p_value"] == pytest.approx(expected)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_mean_std_uses_the_sample_deviation():
    assert mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.5]) == (0.5, 0.0)
