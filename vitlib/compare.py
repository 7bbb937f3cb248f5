"""How far a rebuild's numbers may move from the committed reference's `results.json`.

On the machine that built the reference (same CPU model and flags, cores, Python and libraries)
every number must come out identical. On another CPU, float rounding makes a chaotic training run
behave like a run with another seed, so a number may move as far as K of the spreads the report
states for it (σ, the seed or fold standard deviation) would move it. Each kind of number gets the
tolerance that follows from what it is (names as `findings.gather` writes them):

    run or mean      one run's score, or a mean of runs             K·σ
    effect           a difference of two means (`.effect[...]`)     2·K·σ
    spread           a standard deviation (kind "spread")           within a factor R of the reference
    interval bound   `.ci_low` / `.ci_high` around a centre         the centre's tolerance, plus what
                                                                    the spread's own move shifts it
    count, constant  images, parameters, the course report's claim  exact
    pick             a configuration chosen by a score (text)       equal, or a near tie by the
                                                                    rebuild's own scores
    p                a p-value                                      shown, not checked across CPUs

σ is the larger of the two files' spreads (each is an estimate from a few seeds or folds; the
spreads themselves are held by the factor R), and never below FLOOR.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .findings import point_key, validation_errors
from .stats import wilson_interval

K = 3.0  # spreads a number may move on another CPU
R = 10.0  # factor a standard deviation of a few runs may change by on another CPU
FLOOR = 0.001  # smallest σ: three identical seeds on one CPU need not stay identical on another
BOUNDS = (".ci_low", ".ci_high")


def compare(committed: dict, rebuilt: dict) -> tuple[pd.DataFrame, bool]:
    """One row per committed number: number, committed, rebuilt, difference, tolerance, verdict, ok;
    and whether both were built on the same machine (then every number must be identical).

    verdict is "equal", "within tolerance", "MOVED" (beyond it), "missing" or "not checked"."""
    same = committed["built"]["machine"] == rebuilt["built"]["machine"]
    have, new = committed["numbers"], rebuilt["numbers"]
    rows = []
    for name, c in have.items():
        r = new.get(name)
        if r is None:
            rows.append((name, c["value"], None, None, None, "missing"))
            continue
        equal = _equal(c["value"], r["value"])
        if equal or same:
            rows.append((name, c["value"], r["value"], _difference(c, r), 0.0, "equal" if equal else "MOVED"))
            continue
        tolerance, ok = _judge(name, c, r, have, new)
        verdict = "not checked" if ok is None else ("within tolerance" if ok else "MOVED")
        rows.append((name, c["value"], r["value"], _difference(c, r), tolerance, verdict))
    table = pd.DataFrame(rows, columns=["number", "committed", "rebuilt", "difference", "tolerance", "verdict"])
    table["ok"] = table["verdict"] != "MOVED"
    table.loc[table["verdict"] == "missing", "ok"] = False
    return table, same


def counts(table: pd.DataFrame) -> dict:
    """{verdict: how many numbers}, in a fixed order."""
    order = ["equal", "within tolerance", "not checked", "MOVED", "missing"]
    found = table["verdict"].value_counts()
    return {v: int(found.get(v, 0)) for v in order}


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _difference(c: dict, r: dict):
    numeric = all(isinstance(x["value"], (int, float)) and not isinstance(x["value"], bool) for x in (c, r))
    return r["value"] - c["value"] if numeric else None


def _sigma(c: dict, r: dict | None) -> float | None:
    spreads = [x["spread"] for x in (c, r) if x is not None and isinstance(x.get("spread"), (int, float))]
    spreads = [s for s in spreads if np.isfinite(s)]
    return max([*spreads, FLOOR]) if spreads else None


def _judge(name: str, c: dict, r: dict, have: dict, new: dict) -> tuple[float | None, bool | None]:
    """(tolerance, ok) on another CPU for a number that changed; ok None: not checked."""
    kind = c["kind"]
    if kind in ("count", "constant"):
        return 0.0, False
    if kind == "p":
        return None, None
    if kind == "text" or isinstance(c["value"], str):
        return None, _near_tie(name, c["value"], r["value"], new)
    if not (isinstance(r["value"], (int, float)) and math.isfinite(r["value"])):
        return None, False
    diff = abs(r["value"] - c["value"])
    if kind == "spread":
        allowed = (R - 1) * max(c["value"], FLOOR) if r["value"] > c["value"] else c["value"] * (1 - 1 / R)
        return allowed, diff <= allowed
    if name.endswith(BOUNDS):
        tolerance = _bound_tolerance(name, c, have, new)
    elif ".effect[" in name:
        sigma = _sigma(c, r)
        tolerance = None if sigma is None else 2 * K * sigma
    else:
        sigma = _sigma(c, r)
        tolerance = None if sigma is None else K * sigma
    if tolerance is None:
        return None, None  # no stated spread to judge by
    return tolerance, diff <= tolerance


def _bound_tolerance(name: str, c: dict, have: dict, new: dict) -> float | None:
    """An interval bound moves with its centre and its width: a t-interval (mean ± t·s/√n) with the
    mean and the standard deviation s; a Wilson interval on a fixed test set with the accuracy."""
    stem = name[: name.rindex(".")]
    if f"{stem}.mean" in have and f"{stem}.std" in have:  # a t-interval over seeds
        centre, spread = f"{stem}.mean", f"{stem}.std"
        sigma = _sigma(have[centre], new.get(centre))
        if sigma is None or spread not in new:
            return None
        s_c, s_r = have[spread]["value"], new[spread]["value"]
        # t/√n, from whichever file has a spread to divide by (three equal seeds give s = 0)
        if s_c > 0:
            per_spread = abs(c["value"] - have[centre]["value"]) / s_c
        elif s_r > 0 and name in new and centre in new:
            per_spread = abs(new[name]["value"] - new[centre]["value"]) / s_r
        else:
            per_spread = 0.0
        return K * sigma + per_spread * abs(s_r - s_c)
    count = f"{stem.rsplit('.', 1)[0]}.n_test"
    if stem in have and count in have:  # a Wilson interval on n_test images
        sigma = _sigma(have[stem], new.get(stem))
        if sigma is None:
            return None
        n, p, side = int(have[count]["value"]), have[stem]["value"], BOUNDS.index(name[len(stem) :])
        ends = [wilson_interval(round(min(max(q, 0.0), 1.0) * n), n)[side] for q in (p - K * sigma, p + K * sigma)]
        return max(abs(e - c["value"]) for e in ends)
    sigma = _sigma(c, new.get(name))
    return None if sigma is None else K * sigma


def _near_tie(name: str, picked: str, rebuilt_pick: str, new: dict) -> bool:
    """A pick may change on another CPU only where the rebuild's own scores call it a near tie: the
    committed pick and the rebuilt one score within K·σ of each other (validation errors, per
    configuration; averaged over a key's level, within 2·K·σ as for an effect)."""
    if name.endswith(".best") and not name.startswith("selection.effect["):  # a selection's pick
        scores = validation_errors(new, name[: -len(".best")])
        mine, theirs = scores.get(point_key(picked)), scores.get(point_key(rebuilt_pick))
        if mine is None or theirs is None:
            return False
        return abs(mine[0] - theirs[0]) <= K * max(mine[1], theirs[1], FLOOR)
    scores = validation_errors(new)
    if scores and name.startswith("selection.effect[") and name.endswith("].best"):
        key = name[len("selection.effect[") : -len("].best")]
        levels: dict[str, list] = {}
        for point, (error, _) in scores.items():
            value = dict(point).get(key)
            if value is not None and math.isfinite(error):
                levels.setdefault(value, []).append(error)
        means = {v: float(np.mean(e)) for v, e in levels.items()}
        noise = new.get("selection.fold_noise", {}).get("value") or FLOOR
        if picked not in means or rebuilt_pick not in means:
            return False
        return abs(means[picked] - means[rebuilt_pick]) <= 2 * K * max(noise, FLOOR)
    return False
