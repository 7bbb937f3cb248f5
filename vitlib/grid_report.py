"""The grid report (notebook 06, the `full` profile): what a larger model-selection grid adds to
the seed report's study, which it refers to for data, model and protocol. Which settings matter,
by how much, how two of them interact, and what the grid's pick scores on the test set. Each
function returns a `Table` or `Markdown` built from results; `gather` collects the report's numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.display import Markdown

from . import findings
from .findings import number
from .report import plural, point
from .selection import SelectionResult
from .selection_report import NOISE_FACTOR, UNSTABLE_FACTOR
from .tables import Table

# What each setting of the grid means, for readers of the seed report.
MEANINGS = {
    "lr": "the learning rate of Adam (the seed report's is 0.005)",
    "depth": "the number of encoder blocks",
    "mlp_hidden_dim": "the hidden units of each block's MLP",
    "head_hidden_layers": (
        "hidden layers in the classification head, each as wide as the block MLP and followed by a GELU, "
        "before its final linear layer (0: a linear head, as in the course report's code, which the seed report "
        "reruns; its text speaks of two hidden layers)"
    ),
}


def comparable(results: dict, seed: dict | None) -> dict | None:
    """The seed report's results where they come from the same images (a quick profile's do not)."""
    if seed is None:
        return None
    same = ("final.n_train", "final.n_test")
    return seed if all(seed["numbers"][k]["value"] == results["numbers"][k]["value"] for k in same) else None


def _configs(results: dict) -> int:
    return sum(1 for k in results["numbers"] if k.startswith("selection.val_error["))


def effects(selection: SelectionResult) -> pd.DataFrame:
    """setting, spread (of its mean validation error over its values), best value, and each
    value's mean, largest spread first."""
    ok, rows = selection.ok(), []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].mean()
        if len(means) > 1:
            rows.append((key, float(means.max() - means.min()), means.idxmin(), means.to_dict()))
    df = pd.DataFrame(rows, columns=["setting", "spread", "best", "means"])
    return df.sort_values("spread", ascending=False, kind="stable").reset_index(drop=True)


def heatmap_keys(selection: SelectionResult) -> tuple[str, str, list[str]]:
    """The two settings with the largest main effects (rows, columns of each panel), and the rest
    (one panel per combination of their values)."""
    if len(selection.grid_keys) < 2:
        raise ValueError(
            f"the grid report compares settings two by two, but this grid varies only {selection.grid_keys}. "
            "Fix: give the profile's `grid:` at least two settings (params/full.yaml has an example)"
        )
    ranked = list(effects(selection)["setting"])
    order = ranked + [k for k in selection.grid_keys if k not in ranked]
    return order[0], order[1], [k for k in selection.grid_keys if k not in order[:2]]


def cell_means(selection: SelectionResult, a: str, b: str) -> pd.DataFrame:
    """Mean validation error for each value of `a` (rows) and `b` (columns), over the rest of the grid."""
    return selection.ok().pivot_table(index=a, columns=b, values="val_error_mean", aggfunc="mean")


def interaction(selection: SelectionResult, a: str, b: str) -> float:
    """The largest departure from additivity in `cell_means`: how much the effect of one setting
    depends on the other (0 when the two effects simply add)."""
    m = cell_means(selection, a, b).to_numpy()
    residual = m - m.mean(axis=1, keepdims=True) - m.mean(axis=0, keepdims=True) + m.mean()
    return float(np.abs(residual).max())


def intro(selection: SelectionResult, study, n_train: int, seed: dict | None) -> Markdown:
    cfg = study.config
    grid = "; ".join(f"**{k}** in {{{', '.join(str(v) for v in values)}}}" for k, values in cfg.selection.grid.items())
    meanings = "; ".join(f"*{k}*: {MEANINGS[k]}" for k in cfg.selection.grid if k in MEANINGS)
    seed_pick = (
        f" over {_configs(seed)} configurations (it picks {seed['numbers']['selection.best']['value']})" if seed else ""
    )
    return Markdown(
        f"The seed report ([`report/seed/report.pdf`](../seed/report.pdf)) reruns a course report's Vision Transformer on MNIST and "
        f"chooses its depth and MLP width by cross-validation{seed_pick}. Its data, model and protocol are this "
        f"report's too: {n_train:,} training images, {cfg.selection.folds} folds without shuffling, "
        f"{plural(cfg.train.epochs, 'epoch')}, Adam, batch "
        f"{cfg.train.batch_size}, and no double softmax. This report asks what a larger grid adds: "
        f"{grid}, {len(selection.summary)} configurations and {len(selection.trials)} trials. The settings: "
        f"{meanings}."
    )


def heatmap_caption(selection: SelectionResult, number: int) -> Markdown:
    a, b, panels = heatmap_keys(selection)
    best = selection.summary.loc[selection.summary["val_error_mean"].idxmin()]
    return Markdown(
        f"**Figure {number}.** Mean validation error over {int(selection.summary['folds'].max())} folds of every "
        f"configuration: {a} (rows) × {b} (columns), one panel per "
        f"{' and '.join(panels) if panels else 'grid'} setting; darker is better, the selected one is boxed. "
        f"The best cell, {best['val_error_mean']:.1%}, is {point(selection.best)}; the worst, "
        f"{selection.ok()['val_error_mean'].max():.1%}."
    )


def effects_table(selection: SelectionResult, number: int) -> Table:
    noise = selection.fold_noise()
    rows = []
    for r in effects(selection).itertuples():
        values = " · ".join(f"{v}: {m:.1%}" for v, m in r.means.items())
        verdict = "beyond fold noise" if r.spread > NOISE_FACTOR * noise else "within fold noise"
        rows.append((r.setting, values, f"{r.spread * 100:.1f}", verdict))
    return Table(
        pd.DataFrame(rows, columns=["setting", "mean validation error per value", "spread (points)", "verdict"]),
        f"Table {number}. Each setting's main effect: validation error averaged over the rest of the grid; "
        f"beyond fold noise means a spread over {NOISE_FACTOR} × {noise * 100:.3f} = {NOISE_FACTOR * noise * 100:.2f} "
        f"points ({NOISE_FACTOR} × the median fold standard deviation)",
        widths={"mean validation error per value": "6.5cm"},
    )


def interaction_table(selection: SelectionResult, a: str, b: str, number: int) -> Table:
    m = cell_means(selection, a, b)
    df = pd.DataFrame({a: [str(i) for i in m.index], **{f"{b}={c}": [f"{v:.1%}" for v in m[c]] for c in m.columns}})
    return Table(df, f"Table {number}. Mean validation error for each {a} and {b}, over the rest of the grid")


def unstable(selection: SelectionResult) -> pd.DataFrame:
    ok = selection.ok()
    return ok[ok["val_error_std"] > UNSTABLE_FACTOR * selection.fold_noise()]


def effects_text(selection: SelectionResult, table: int, interaction_table_number: int) -> Markdown:
    """Which settings matter and how much, how the top two interact, and which configurations
    trained erratically: one rule throughout."""
    noise, eff = selection.fold_noise(), effects(selection)
    matter = eff[eff["spread"] > NOISE_FACTOR * noise]
    quiet = eff[eff["spread"] <= NOISE_FACTOR * noise]
    a, b, _ = heatmap_keys(selection)
    m = cell_means(selection, a, b)
    size = interaction(selection, a, b)
    best_a = {j: m[j].idxmin() for j in m.columns}
    text = (
        f"Table {table}: "
        + (
            ", ".join(
                f"**{r.setting}** moves the mean validation error by {r.spread * 100:.1f} points"
                for r in matter.itertuples()
            )
            if len(matter)
            else "no setting moves the mean validation error"
        )
        + f", beyond fold noise ({NOISE_FACTOR * noise * 100:.2f} points)"
        + (
            "; "
            + ", ".join(f"{r.setting} ({r.spread * 100:.1f} points)" for r in quiet.itertuples())
            + " stay within it."
            if len(quiet)
            else "."
        )
        + f" Table {interaction_table_number}: the best {a} "
        + (
            f"is {next(iter(best_a.values()))} at every {b}"
            if len(set(best_a.values())) == 1
            else f"for each {b} is " + ", ".join(f"{v} at {b}={j}" for j, v in best_a.items())
        )
        + f"; the effects of {a} and {b} depart from simply adding by up to {size * 100:.1f} points, "
        + ("beyond" if size > NOISE_FACTOR * noise else "within")
        + f" fold noise{': they interact' if size > NOISE_FACTOR * noise else ''}."
    )
    shaky = unstable(selection)
    if len(shaky):
        names = "; ".join(point({k: r[k] for k in selection.grid_keys}) for r in shaky.to_dict("records"))
        text += (
            f" {len(shaky)} configuration{'s' if len(shaky) > 1 else ''} trained erratically, their folds "
            f"disagreeing by more than {UNSTABLE_FACTOR} × the median fold standard deviation ({names}); they are counted in every "
            f"average above."
        )
    return Markdown(text)


def top_table(selection: SelectionResult, number: int, n: int = 6) -> Table:
    ranked = selection.ok().sort_values("val_error_mean", kind="stable").head(n)
    df = ranked[selection.grid_keys].astype(str).copy()
    df["validation error"] = [f"{m:.2%} ± {s:.2%}" for m, s in zip(ranked["val_error_mean"], ranked["val_error_std"])]
    return Table(
        df, f"Table {number}. The {n} best configurations of the grid (mean ± std over folds); the first is selected"
    )


def all_configurations_table(selection: SelectionResult, number: int) -> Table:
    s = selection.summary
    df = s[selection.grid_keys].astype(str).copy()
    df["validation error"] = [f"{m:.2%} ± {sd:.2%}" for m, sd in zip(s["val_error_mean"], s["val_error_std"])]
    df["training error"] = [f"{m:.2%} ± {sd:.2%}" for m, sd in zip(s["train_error_mean"], s["train_error_std"])]
    return Table(df, f"Table {number}. Every configuration of the grid: error, mean ± std over folds")


def gather(study) -> dict:
    """The grid report's numbers: the selection (each configuration, the pick, the main effects),
    the cell means of the top two settings and their interaction, the final model and its seeds."""
    selection = study.selection()
    numbers = {**findings.selection_numbers(selection), **findings.final_numbers(study)}
    a, b, _ = heatmap_keys(selection)
    noise = selection.fold_noise()
    for (i, j), value in cell_means(selection, a, b).stack().items():
        numbers[f"selection.cell[{a}={i}, {b}={j}]"] = number(
            float(value), noise, label=f"mean validation error at {a}={i}, {b}={j}"
        )
    numbers[f"selection.interaction[{a}, {b}]"] = number(
        interaction(selection, a, b), noise, label=f"largest departure from additivity of {a} and {b}"
    )
    numbers["selection.unstable"] = number(len(unstable(selection)), kind="count", label="erratic configurations")
    return {"profile": study.profile, "numbers": numbers, "built": findings.built(study.timing())}


def _v(results: dict, name: str):
    return results["numbers"][name]["value"]


def _effects_in(results: dict) -> list[tuple[str, float, str]]:
    """(setting, main effect, best value) as results.json states them, largest effect first."""
    found = [
        (k[len("selection.effect[") : -1], v["value"], _v(results, k + ".best"))
        for k, v in results["numbers"].items()
        if k.startswith("selection.effect[") and k.endswith("]")
    ]
    return sorted(found, key=lambda e: -e[1])


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def abstract(results: dict, seed: dict | None) -> Markdown:
    n = results["numbers"]
    configs = sum(1 for k in n if k.startswith("selection.val_error["))
    noise = _v(results, "selection.fold_noise")
    effects = _effects_in(results)
    named = {"head_hidden_layers": "head_hidden_layers (hidden layers in the classification head)"}
    matter = [f"{named.get(k, k)} ({v * 100:.0f} points)" for k, v, _ in effects if v > NOISE_FACTOR * noise]
    quiet = [named.get(k, k) for k, v, _ in effects if v <= NOISE_FACTOR * noise]
    if matter:
        verdict = f"The settings that move the mean validation error beyond fold noise are {_and(matter)}" + (
            f"; {_and(quiet)} {'does' if len(quiet) == 1 else 'do'} not. " if quiet else ". "
        )
    else:
        verdict = "No setting moves the mean validation error beyond fold noise. "
    text = (
        f"**Abstract.** The seed report's model selection, over {configs} configurations"
        + (f" of its own, where the seed report searched {_configs(seed)}. " if seed else ". ")
        + verdict
        + f"The pick, {_v(results, 'selection.best')}, has a validation error of "
        f"{_v(results, 'selection.best.val_error'):.2%} and scores {_v(results, 'final.test_accuracy'):.2%} on the "
        f"test set ({_v(results, 'seeds.test_accuracy.mean'):.2%} ± {_v(results, 'seeds.test_accuracy.std'):.2%} "
        "over seeds)"
    )
    if seed:
        s = seed["numbers"]
        text += (
            f", against {s['seeds.test_accuracy.mean']['value']:.2%} ± {s['seeds.test_accuracy.std']['value']:.2%} "
            f"for the seed report's pick"
        )
    return Markdown(text + ". Every number is computed when the report is built.")


def discussion(results: dict, seed: dict | None) -> Markdown:
    n = results["numbers"]
    noise = _v(results, "selection.fold_noise")
    parts = [
        "**Which settings matter.** "
        + "; ".join(
            f"{k}: {v * 100:.1f} points between its best value ({best}) and its worst, "
            + ("beyond" if v > NOISE_FACTOR * noise else "within")
            + " fold noise"
            for k, v, best in _effects_in(results)
        )
        + f" (the rule: more than {NOISE_FACTOR} × the median fold standard deviation of {noise * 100:.3f} points, "
        f"so {NOISE_FACTOR * noise * 100:.2f} points)."
    ]
    inter = next((k for k in n if k.startswith("selection.interaction[")), None)
    if inter:
        a, b = inter[len("selection.interaction[") : -1].split(", ")
        cells = {k: v["value"] for k, v in n.items() if k.startswith("selection.cell[")}
        best_cell = min(cells, key=cells.get)
        size = n[inter]["value"]
        parts.append(
            f"**How {a} and {b} interact.** The best combination on average is {best_cell[len('selection.cell[') : -1]} "
            f"({cells[best_cell]:.1%}); the two effects depart from adding up by up to {size * 100:.1f} points, "
            + (
                "so the best learning rate depends on the depth."
                if size > NOISE_FACTOR * noise and {a, b} == {"lr", "depth"}
                else ""
            )
            + ("beyond fold noise." if size > NOISE_FACTOR * noise and {a, b} != {"lr", "depth"} else "")
            + ("within fold noise: their effects add." if size <= NOISE_FACTOR * noise else "")
        )
    pick = (
        f"**What the grid buys.** Its pick scores {_v(results, 'seeds.test_accuracy.mean'):.2%} ± "
        f"{_v(results, 'seeds.test_accuracy.std'):.2%} on the test set over seeds"
    )
    if seed:
        s = seed["numbers"]
        gain = _v(results, "seeds.test_accuracy.mean") - s["seeds.test_accuracy.mean"]["value"]
        spread = max(_v(results, "seeds.test_accuracy.std"), s["seeds.test_accuracy.std"]["value"])
        pick += (
            f", {gain * 100:+.2f} points against the seed report's pick ({s['selection.best']['value']}, "
            f"{s['seeds.test_accuracy.mean']['value']:.2%}), "
            + ("more than" if abs(gain) > 2 * spread else "within")
            + " twice the larger seed standard deviation (the seed report's pick has that report's learning rate "
            "and head, so the difference mixes those settings in too)"
        )
    parts.append(pick + ".")
    parts.append(
        "**Limits.** A few epochs per trial favour settings that learn fast (a high learning rate) over ones that "
        "would win with longer training; three folds and three seeds give rough spreads; one CPU built these "
        "numbers (`make check-report PROFILE=full` measures how far another moves them)."
    )
    return Markdown("\n\n".join(parts))


def headline_table(results: dict, seed: dict | None, number: int) -> Table:
    rows = [
        (
            "the grid's pick",
            _v(results, "selection.best"),
            f"validation error {_v(results, 'selection.best.val_error'):.2%}",
        ),
        (
            "its final model, test accuracy",
            f"{_v(results, 'final.test_accuracy'):.2%}",
            f"95% interval {_v(results, 'final.test_accuracy.ci_low'):.2%} – {_v(results, 'final.test_accuracy.ci_high'):.2%}",
        ),
        (
            "the same over seeds",
            f"{_v(results, 'seeds.test_accuracy.mean'):.2%} ± {_v(results, 'seeds.test_accuracy.std'):.2%}",
            "mean ± std",
        ),
    ]
    if "runner_up.test_accuracy" in results["numbers"]:
        rows.append(("the runner-up of selection", f"{_v(results, 'runner_up.test_accuracy'):.2%}", "one seed"))
    if seed:
        s = seed["numbers"]
        rows.append(
            (
                f"the seed report's pick ({s['selection.best']['value']})",
                f"{s['seeds.test_accuracy.mean']['value']:.2%} ± {s['seeds.test_accuracy.std']['value']:.2%}",
                "mean ± std over seeds, report/seed/",
            )
        )
    return Table(
        pd.DataFrame(rows, columns=["", "result", "note"]),
        f"Table {number}. Headline results (every number computed by a build)",
        widths={"": "5.5cm", "result": "5cm"},
    )
