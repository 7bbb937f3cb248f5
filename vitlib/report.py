"""What the reports share: numbered captions, plurals, percentages with their spread or interval,
minutes, and the runner-up of a comparison. Each report's tables and prose are in its own module
(`study_report`, `laptop_report`); `headline` holds the opening and closing sections. Numbers in
the prose come from results, never typed in; percentages have two decimals."""

from __future__ import annotations

import math

import pandas as pd
from IPython.display import Markdown

from .stats import wilson_interval


def caption(kind: str, number: int, text: str) -> Markdown:
    """'Figure 3. text' under a figure (tables carry theirs)."""
    return Markdown(f"**{kind} {number}.** {text}")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def point(point: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in point.items())


def pct_pm(mean: float, std: float) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "failed"
    return f"{mean:.2%} ± {0.0 if math.isnan(std) else std:.2%}"


def interval_text(accuracy: float, n: int) -> str:
    lo, hi = wilson_interval(round(accuracy * n), n)
    return f"{lo:.2%} – {hi:.2%}"


def runner_up(candidates: dict[str, dict], chosen: str) -> str:
    """The candidate with the next lowest validation error."""
    return min((name for name in candidates if name != chosen), key=lambda name: candidates[name]["test_error"])


def seconds_per_epoch(metrics: dict) -> float:
    """Median seconds per epoch, training and scoring: the first epoch also compiles."""
    return float(pd.Series([h["seconds"] for h in metrics["history"]]).median())


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def number_word(n: int) -> str:
    return {2: "Two", 3: "Three", 4: "Four", 5: "Five"}.get(n, str(n))


OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}  # as the literature writes them


def signed_points(points: float) -> str:
    """+0.78 or −0.46, with a true minus sign."""
    return f"{points:+.2f}".replace("-", "−")
