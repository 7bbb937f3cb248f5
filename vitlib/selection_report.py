"""Model selection in the reports (notebook 01): the validation errors of the grid, what the rule
chose and how sure that is, the main effect of each setting. Each function returns a `Table` or a
`Markdown` built from results, for one notebook cell."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from .report import caption, pct_pm, plural, point
from .selection import SelectionResult
from .tables import Table


def selection_figure_caption(selection: SelectionResult, number: int) -> Markdown:
    """The caption of `plots.model_selection`'s figure, which draws a large grid differently."""
    if len(selection.summary) > 12:
        return caption(
            "Figure",
            number,
            "Validation error of every configuration, best at the top: the mean over "
            "folds (bar) and each fold (dot); a triangle marks the selected one.",
        )
    return caption(
        "Figure",
        number,
        "Training and validation error of each configuration: the mean over folds "
        "(line), the range over folds (bars) and each fold (dots); the selected one "
        "is circled." + _lead_sentence(selection),
    )


def _lead_sentence(selection: SelectionResult) -> str:
    """What to see in the selection figure: how far the pick leads, against the folds' own spread."""
    ranked = selection.ok().sort_values("val_error_mean", kind="stable")
    if len(ranked) < 2:
        return ""
    first, second = ranked["val_error_mean"].iloc[0], ranked["val_error_mean"].iloc[1]
    return (
        f" Its mean validation error, {first:.2%}, is {(second - first) * 100:.2f} points below the next one's, "
        f"{'beyond' if _beyond_noise(selection, second - first) else 'within'} fold noise."
    )


def main_effects_caption(selection: SelectionResult, number: int) -> Markdown:
    """The caption of `plots.main_effects`'s figure, with the setting that moves the error most."""
    effects = main_effects(selection)
    spread = effects.groupby("setting", sort=False)["mean"].agg(lambda m: m.max() - m.min())
    text = (
        "Main effects: mean validation error per value of each grid setting; bars: the median fold standard deviation."
    )
    if len(spread) and spread.max() > 0:
        text += f" The setting that moves it most is {spread.idxmax()}, by {spread.max() * 100:.2f} points."
    return caption("Figure", number, text)


def selection_table(result: SelectionResult, number: int, variants: dict[str, SelectionResult] | None = None) -> Table:
    """Mean ± std over folds per config, the chosen one marked; with `variants` (the same grid with
    some settings changed), their validation error and choice beside."""
    s = result.summary
    df = s[result.grid_keys].copy()
    df["validation error"] = [pct_pm(m, sd) for m, sd in zip(s["val_error_mean"], s["val_error_std"])]
    df["training error"] = [pct_pm(m, sd) for m, sd in zip(s["train_error_mean"], s["train_error_std"])]
    if len(s) <= 12 and not variants:  # a long or doubled table keeps to what fits across the page
        df["validation loss"] = [f"{m:.4f}" for m in s["val_loss_mean"]]
        df["s / trial"] = [f"{v:.0f}" for v in s["seconds_mean"]]
    else:
        df = df.drop(columns="training error")
    if s["failed_folds"].any():
        df["failed folds"] = s["failed_folds"]
    df["chosen"] = _chosen(result)
    for name, variant in (variants or {}).items():
        v, short = variant.summary, name.split(" (")[0]
        df[f"validation error, {short}"] = [pct_pm(m, sd) for m, sd in zip(v["val_error_mean"], v["val_error_std"])]
        df[f"chosen, {short}"] = _chosen(variant)
    loss = " and cross-entropy loss" if "validation loss" in df else ""
    beside = "; beside, the same selection " + " and ".join(variants) if variants else ""
    return Table(
        df,
        f"Table {number}. Model selection: misclassification error{loss} of each configuration "
        f"(mean ± std over {int(s['folds'].max())} folds){beside}",
    )


def _chosen(result: SelectionResult) -> list[str]:
    return ["yes" if all(r[k] == v for k, v in result.best.items()) else "" for _, r in result.summary.iterrows()]


def variants_conclusion(
    selection: SelectionResult, variants: dict[str, SelectionResult], course: dict
) -> Markdown | None:
    """Which configuration each selection picks, against the course report's choice `course`."""
    if not variants:
        return None

    def verdict(best: dict) -> str:
        return "the course report's choice" if best == course else "not the course report's choice"

    parts = [
        f"The course report's own selection chose {point(course)}. Run here "
        + "; ".join(f"{name}, it picks **{point(v.best)}** ({verdict(v.best)})" for name, v in variants.items())
        + f"; with the double softmax removed it picks **{point(selection.best)}** ({verdict(selection.best)})."
    ]
    for name, v in variants.items():
        ranked = v.summary.sort_values("val_error_mean", kind="stable").to_dict("records")
        if len(ranked) > 1:
            gap = ranked[1]["val_error_mean"] - ranked[0]["val_error_mean"]
            parts.append(f"Its pick {name} leads the next configuration by {gap * 100:.2f} points: {_margin(v, gap)}.")
    return Markdown(" ".join(parts))


def _beyond_noise(result: SelectionResult, gap: float) -> bool:
    """The one rule for fold noise: a gap larger than NOISE_FACTOR x the median fold std."""
    return gap > NOISE_FACTOR * result.fold_noise()


def _margin(result: SelectionResult, gap: float) -> str:
    """A pick's lead, judged by the one rule for fold noise."""
    limit = NOISE_FACTOR * result.fold_noise()
    return (
        f"beyond fold noise (more than {NOISE_FACTOR} × the median fold standard deviation, {limit * 100:.2f} points), "
        "a clear pick"
        if _beyond_noise(result, gap)
        else f"within fold noise ({NOISE_FACTOR} × the median fold standard deviation is {limit * 100:.2f} points), "
        "so the pick is not clear-cut"
    )


def selection_conclusion(result: SelectionResult, table: int) -> Markdown:
    s = result.summary[result.summary["failed_folds"] == 0].sort_values("val_error_mean", kind="stable")
    rows = s.to_dict("records")  # keeps each column's type: depth stays an int
    best, rest = rows[0], rows[1:]
    text = (
        f"Table {table} selects **{point({k: best[k] for k in result.grid_keys})}**, with a mean validation "
        f"error of {best['val_error_mean']:.2%} (± {best['val_error_std']:.2%} over folds)."
    )
    if rest:
        second = rest[0]
        gap = second["val_error_mean"] - best["val_error_mean"]
        text += (
            f" The runner-up ({point({k: second[k] for k in result.grid_keys})}) is {gap * 100:.2f} points "
            f"behind: {_margin(result, gap)}."
        )
    failed = result.summary[result.summary["failed_folds"] > 0]
    if len(failed):
        text += f" {plural(len(failed), 'configuration')} diverged in at least one fold and were not eligible."
    return Markdown(text)


def grid_effects(selection: SelectionResult, number: int) -> Table | None:
    """Mean validation error for each value of each grid setting, averaged over the rest of the
    grid (a main-effects view; meaningful for full factorial grids such as the profiles')."""
    effects = main_effects(selection)
    if effects.empty:
        return None
    df = effects.assign(
        **{
            "mean validation error": [f"{v:.2%}" for v in effects["mean"]],
            "best validation error": [f"{v:.2%}" for v in effects["min"]],
        }
    )
    df = df[["setting", "value", "mean validation error", "best validation error", "configs"]]
    return Table(df, f"Table {number}. Each setting's main effect: validation error averaged over the rest of the grid")


def main_effects(selection: SelectionResult) -> pd.DataFrame:
    """setting, value, mean, min, count: validation error per value of each grid setting."""
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    rows = []
    for key in selection.grid_keys:
        for value, r in ok.groupby(key, sort=False)["val_error_mean"].agg(["mean", "min", "count"]).iterrows():
            rows.append((key, str(value), r["mean"], r["min"], int(r["count"])))
    return pd.DataFrame(rows, columns=["setting", "value", "mean", "min", "configs"])


# One rule for "beyond fold noise" in every report: a difference larger than NOISE_FACTOR times the
# median standard deviation between the folds of one configuration. A configuration whose folds
# disagree by more than UNSTABLE_FACTOR times that trained erratically: it is named, and counted.
NOISE_FACTOR, UNSTABLE_FACTOR = 2, 3


def grid_effects_text(selection: SelectionResult) -> Markdown:
    ok, noise = selection.ok(), selection.fold_noise()
    parts, matter = [], []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].mean()
        if len(means) < 2:
            continue
        best, worst = means.idxmin(), means.idxmax()
        if means[worst] - means[best] < 1e-12:
            parts.append(f"**{key}**: the same on average for all its values ({means[best]:.2%})")
            continue
        spread = means[worst] - means[best]
        beyond = spread > NOISE_FACTOR * noise
        (matter if beyond else []).append(key)
        parts.append(
            f"**{key}**: best on average at {best} ({means[best]:.2%}), worst at {worst} "
            f"({means[worst]:.2%}), a spread of {spread * 100:.2f} points, {'beyond' if beyond else 'within'} fold noise"
        )
    text = "; ".join(parts) + "." if parts else "The grid has a single value per setting."
    text += (
        f" The rule: a spread beyond fold noise is larger than {NOISE_FACTOR} × the median standard deviation "
        f"between the folds of one configuration ({noise * 100:.3f} points), so {NOISE_FACTOR * noise * 100:.2f} points."
    )
    if parts:
        text += (
            f" So {', '.join(matter) if matter else 'none of the settings'} "
            f"{'moves' if len(matter) == 1 else 'move'} the average beyond fold noise on this grid."
        )
    unstable = ok[ok["val_error_std"] > UNSTABLE_FACTOR * noise]
    if len(unstable):
        names = "; ".join(
            ", ".join(f"{k}={r[k]}" for k in selection.grid_keys)
            for r in unstable[selection.grid_keys].to_dict("records")
        )
        text += (
            f" {len(unstable)} configuration{'s' if len(unstable) > 1 else ''} trained erratically, "
            f"{'their' if len(unstable) > 1 else 'its'} folds disagreeing by more than {UNSTABLE_FACTOR} × that "
            f"standard deviation ({names}); the averages count {'them' if len(unstable) > 1 else 'it'}."
        )
    return Markdown(text)
