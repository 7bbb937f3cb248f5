"""Statistics for honest comparisons: confidence intervals for an accuracy, seed spread, and the
paired McNemar test between two classifiers scored on the same test images.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, norm


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (better than the normal approximation near 0 or 1)."""
    if total <= 0:
        raise ValueError("total must be positive")
    z = norm.ppf(0.5 + confidence / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test on paired per-image correctness of two models.

    Only the discordant images count: b01 (A wrong, B right) and b10 (A right, B wrong); under the
    null hypothesis of equal accuracy each discordant image is a fair coin flip.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError("both models must be scored on the same images")
    b01, b10 = int((~a & b).sum()), int((a & ~b).sum())
    n = b01 + b10
    p_value = binomtest(b10, n, 0.5).pvalue if n else 1.0
    return {"a_only_right": b10, "b_only_right": b01, "discordant": n, "p_value": float(p_value)}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval for the mean of a few values (e.g. seeds); the mean itself
    for a single value."""
    from scipy.stats import t

    v = np.asarray(values, float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean
    half = float(t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean - half, mean + half
