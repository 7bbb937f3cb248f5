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
        "is circled.",
    )


def selection_table(result: SelectionResult, number: int) -> Table:
    """Mean ± std over folds per config, the chosen one marked."""
    s = result.summary
    df = s[result.grid_keys].copy()
    df["validation error"] = [pct_pm(m, sd) for m, sd in zip(s["val_error_mean"], s["val_error_std"])]
    df["training error"] = [pct_pm(m, sd) for m, sd in zip(s["train_error_mean"], s["train_error_std"])]
    if len(s) <= 12:  # a long table keeps to what fits across the page
        df["validation loss"] = [f"{m:.4f}" for m in s["val_loss_mean"]]
        df["s / trial"] = [f"{v:.0f}" for v in s["seconds_mean"]]
    else:
        df = df.drop(columns="training error")
    if s["failed_folds"].any():
        df["failed folds"] = s["failed_folds"]
    df["chosen"] = ["yes" if all(r[k] == v for k, v in result.best.items()) else "" for _, r in s.iterrows()]
    loss = " and cross-entropy loss" if "validation loss" in df else ""
    return Table(
        df,
        f"Table {number}. Model selection: misclassification error{loss} of each configuration "
        f"(mean ± std over {int(s['folds'].max())} folds)",
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
        spread = max(best["val_error_std"], second["val_error_std"])
        verdict = (
            "smaller than the spread between folds, so this choice is within noise"
            if gap < spread
            else "larger than the spread between folds"
        )
        text += (
            f" The runner-up ({point({k: second[k] for k in result.grid_keys})}) is {gap * 100:.2f} points "
            f"behind; that gap is {verdict} (the larger fold standard deviation of the two: {spread:.2%})."
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


def grid_effects_text(selection: SelectionResult) -> Markdown:
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    noise = ok["val_error_std"].median()
    stable = ok[ok["val_error_std"] <= 3 * noise]  # without configurations whose folds disagree wildly
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
        beyond = spread > noise
        (matter if beyond else []).append(key)
        note = f"{'more than' if beyond else 'within'} fold noise"
        if len(stable) < len(ok):
            kept = stable.groupby(key, sort=False)["val_error_mean"].mean()
            if len(kept) >= 2 and (kept.max() - kept.min() > noise) != beyond:
                note += (
                    f", but {(kept.max() - kept.min()) * 100:.2f} points without the unstable configurations "
                    f"named below, {'more than' if not beyond else 'within'} fold noise"
                )
        parts.append(
            f"**{key}**: best on average at {best} ({means[best]:.2%}), worst at {worst} "
            f"({means[worst]:.2%}), a spread of {spread * 100:.2f} points, {note}"
        )
    text = "; ".join(parts) + "." if parts else "The grid has a single value per setting."
    text += (
        f" For scale, the median standard deviation between the folds of one configuration is "
        f"{noise * 100:.2f} points: a spread smaller than that is within noise."
    )
    if parts:
        text += (
            f" So {', '.join(matter) if matter else 'none of the settings'} "
            f"{'moves' if len(matter) == 1 else 'move'} the average by more than fold noise on this grid."
        )
    unstable = ok[ok["val_error_std"] > 3 * noise]
    if len(unstable):
        names = "; ".join(
            ", ".join(f"{k}={r[k]}" for k in selection.grid_keys)
            for r in unstable[selection.grid_keys].to_dict("records")
        )
        text += (
            f" These averages include {len(unstable)} configuration{'s' if len(unstable) > 1 else ''} whose "
            f"folds disagree by more than three times that (unstable training: {names}); a spread that "
            f"comes from them says more about stability than about the setting."
        )
    return Markdown(text)
