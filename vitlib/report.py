"""The report's tables and prose, built from results: each returns a `Table` or a `Markdown`
that a notebook displays. Numbers in the prose come from the results, never typed in."""

from __future__ import annotations

import json
import math

import pandas as pd
from IPython.display import Markdown

from .config import ExperimentConfig, build_config
from .data import MNIST
from .experiment import run_info
from .selection import SELECTION_RULE, SelectionResult
from .stats import mcnemar, mean_std, wilson_interval
from .study import Study
from .tables import Table


def settings_table(run: Study) -> Table:
    """What was run: the profile, its preset, and every setting that differs from the preset."""
    preset_cfg = build_config(run.preset)
    ours, base = run.config.flat(), preset_cfg.flat()
    rows = [("profile", run.profile, ""), ("preset", run.preset, "")]
    shown = ["patch_size", "embed_dim", "num_heads", "depth", "mlp_hidden_dim", "head_softmax", "optimizer",
             "lr", "batch_size", "epochs", "lr_schedule", "folds", "shuffle_folds", "grid", "seed",
             "train_limit", "test_limit"]
    for key in shown + [k for k in ours if k not in shown and ours[k] != base[k] and k != "data_root"]:
        rows.append((key, _short(ours[key]), "changed by the profile" if ours[key] != base[key] else ""))
    return Table(pd.DataFrame(rows, columns=["setting", "value", "note"]), "Settings of this run")


def environment_table(run: Study) -> Table:
    info = run_info()
    timing = run.timing()
    rows = [(k, str(v)) for k, v in info.items()]
    if "selection_seconds" in timing:
        reused = timing.get("trials_reused", 0)
        note = f" ({reused} of {timing['trials']} trials reused from an earlier run)" if reused else ""
        rows.append(("model selection wall time", f"{timing['selection_seconds']:.0f} s{note}"))
    if "final_seconds" in timing:
        rows.append(("final training wall time", f"{timing['final_seconds']:.0f} s"))
    return Table(pd.DataFrame(rows, columns=["item", "value"]), "Where and with what it ran")


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def data_table(data: MNIST, config: ExperimentConfig) -> Table:
    rows = [("training images", len(data.train_images)), ("test images", len(data.test_images)),
            ("folds for model selection", config.selection.folds),
            ("training images per fold (train / validation)",
             f"{len(data.train_images) - len(data.train_images) // config.selection.folds} / "
             f"{len(data.train_images) // config.selection.folds}")]
    return Table(pd.DataFrame(rows, columns=["", "value"]).astype(str), "Data")


def selection_table(result: SelectionResult) -> Table:
    """Mean ± std over folds per config, best first marked."""
    s = result.summary
    df = s[result.grid_keys].copy()
    for metric in ("train_loss", "train_error", "val_loss", "val_error"):
        df[metric.replace("_", " ")] = [_pm(m, sd) for m, sd in zip(s[f"{metric}_mean"], s[f"{metric}_std"])]
    df["s/trial"] = s["seconds_mean"].round(1)
    if s["failed_folds"].any():
        df["failed folds"] = s["failed_folds"]
    df["chosen"] = ["yes" if all(r[k] == v for k, v in result.best.items()) else "" for _, r in s.iterrows()]
    return Table(df, f"Model selection: mean ± std over {int(s['folds'].max())} folds "
                     f"(error = misclassification rate, loss = cross-entropy)", digits=1)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _pm(mean: float, std: float) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "failed"
    return f"{mean:.4f} ± {0.0 if math.isnan(std) else std:.4f}"


def selection_conclusion(result: SelectionResult) -> Markdown:
    s = result.summary[result.summary["failed_folds"] == 0].sort_values("val_error_mean", kind="stable")
    rows = s.to_dict("records")  # keeps each column's type: depth stays an int
    best, rest = rows[0], rows[1:]
    name = ", ".join(f"{k} = {best[k]}" for k in result.grid_keys)
    text = (f"**Selected: {name}**, with a mean validation error of {best['val_error_mean']:.4f} "
            f"(± {best['val_error_std']:.4f} over folds). Rule: {SELECTION_RULE}.")
    if rest:
        second = rest[0]
        gap = second["val_error_mean"] - best["val_error_mean"]
        spread = max(best["val_error_std"], second["val_error_std"])
        runner = ", ".join(f"{k} = {second[k]}" for k in result.grid_keys)
        verdict = ("smaller than the spread between folds, so this choice is within noise"
                   if gap < spread else "larger than the spread between folds")
        text += (f" The runner-up ({runner}) is {gap:.4f} behind; that gap is {verdict} "
                 f"(largest fold standard deviation of the two: {spread:.4f}).")
    failed = result.summary[result.summary["failed_folds"] > 0]
    if len(failed):
        text += f" {len(failed)} config(s) diverged in at least one fold and were not eligible."
    return Markdown(text)


def final_table(metrics: dict) -> Table:
    rows = [("training (running, last epoch)", metrics["train_loss"], metrics["train_error"],
             1 - metrics["train_error"]),
            ("test", metrics["test_loss"], metrics["test_error"], metrics["test_accuracy"])]
    df = pd.DataFrame(rows, columns=["set", "proxy loss", "misclassification error", "accuracy"])
    return Table(df, f"Final model after {_plural(len(metrics['history']), 'epoch')}", formats={"accuracy": "{:.2%}"})


def final_conclusion(metrics: dict, cfg: ExperimentConfig, best: dict) -> Markdown:
    n = metrics["n_test"]
    wrong = round(metrics["test_error"] * n)
    name = ", ".join(f"{k} = {v}" for k, v in best.items())
    return Markdown(
        f"The selected model ({name}; {metrics['parameters']:,} parameters) reaches a **test accuracy of "
        f"{metrics['test_accuracy']:.2%}** ({wrong} of {n:,} test digits wrong) after {_plural(cfg.train.epochs, 'epoch')} "
        f"of training on {metrics['n_train']:,} images, which took {metrics['train_seconds']:.0f} s on "
        f"{metrics['run']['device']} ({metrics['run']['device_name']})."
    )


def _interval_text(metrics: dict) -> str:
    lo, hi = wilson_interval(round(metrics["test_accuracy"] * metrics["n_test"]), metrics["n_test"])
    return f"{lo * 100:.2f}–{hi * 100:.2f}%"


def seeds_table(runs: dict) -> Table:
    rows = [(name, m["test_accuracy"], _interval_text(m), m["test_loss"], m["train_seconds"])
            for name, m in runs.items() if name != "runner-up"]
    df = pd.DataFrame(rows, columns=["run", "test accuracy", "95% CI (Wilson)", "test proxy loss", "train s"])
    return Table(df, "The selected config, trained with different seeds",
                 formats={"test accuracy": "{:.2%}", "train s": "{:.0f}"})


def statistics_conclusion(runs: dict, selection: SelectionResult) -> Markdown:
    seeds = [m["test_accuracy"] for name, m in runs.items() if name != "runner-up"]
    mean, std = mean_std(seeds)
    first = next(iter(runs.values()))
    lo, hi = wilson_interval(round(first["test_accuracy"] * first["n_test"]), first["n_test"])
    text = (f"Over {len(seeds)} seeds the selected config reaches **{mean:.2%} ± {std:.2%}** test accuracy "
            f"(mean ± standard deviation). For one run, the 95% Wilson interval of its test accuracy is "
            f"{lo:.2%} – {hi:.2%} ({hi - lo:.2%} wide): differences between seeds "
            f"{'are larger than' if std * 2 > hi - lo else 'fit within'} what the test set alone can resolve.")
    if "runner-up" in runs:
        runner = selection.runner_up()
        test = mcnemar(first["test_correct"], runs["runner-up"]["test_correct"])
        name = ", ".join(f"{k} = {v}" for k, v in runner.items())
        verdict = ("a significant difference at the 5% level" if test["p_value"] < 0.05
                   else "no significant difference at the 5% level: the choice between them is within noise")
        text += (f"\n\nAgainst the runner-up of model selection ({name}; test accuracy "
                 f"{runs['runner-up']['test_accuracy']:.2%}, same seed), the exact McNemar test on the "
                 f"{test['discordant']} test images that exactly one of the two gets right "
                 f"({test['a_only_right']} only the selected, {test['b_only_right']} only the runner-up) gives "
                 f"p = {test['p_value']:.3g}: {verdict}.")
    return Markdown(text)


def ablation_table(results: dict, variants: dict) -> Table:
    rows = []
    for name, m in results.items():
        c = variants[name]
        recipe = (f"{c.train.optimizer}, lr {c.train.lr}, {c.train.lr_schedule}"
                  + (f" + {c.train.warmup_epochs:g} warmup epoch(s)" if c.train.warmup_epochs else "")
                  + (", wd " + f"{c.train.weight_decay:g}" if c.train.weight_decay else ""))
        model = ("per-head qkv, no out proj" if c.model.qkv_per_head else "fused qkv + out proj") + \
                (", sinusoidal pos" if c.model.pos_embed == "sinusoidal" else f", {c.model.pos_embed} pos") + \
                (", final LN" if c.model.final_norm else "") + (", input norm" if c.model.normalize_input else "") + \
                (", head softmax" if c.model.head_softmax else "")
        rows.append((name, f"{model}; {m['parameters']:,} parameters", recipe, m["test_accuracy"], _interval_text(m)))
    df = pd.DataFrame(rows, columns=["run", "model", "training", "test accuracy", "95% CI"])
    any_cfg = next(iter(variants.values()))
    return Table(df, f"Reproduction and ablation: depth {any_cfg.model.depth}, MLP {any_cfg.model.mlp_hidden_dim}, "
                     f"embed {any_cfg.model.embed_dim}, batch {any_cfg.train.batch_size}, "
                     f"{_plural(any_cfg.train.epochs, 'epoch')}, seed {any_cfg.train.seed}",
                 formats={"test accuracy": "{:.2%}"},
                 widths={"run": "3cm", "model": "4.4cm", "training": "3.4cm"})


def ablation_conclusion(results: dict) -> Markdown:
    acc = {name: m["test_accuracy"] for name, m in results.items()}
    names = list(acc)
    first = next(iter(results.values()))
    lo, hi = wilson_interval(round(first["test_accuracy"] * first["n_test"]), first["n_test"])
    gain = acc[names[1]] - acc[names[0]]
    text = (f"With the head softmax, as the report trained it, the model reaches {acc[names[0]]:.2%} (the report "
            f"gave 73%); without it, the same model and protocol reach {acc[names[1]]:.2%} ({gain * 100:+.2f} points). At the "
            f"same tiny size, a modern recipe reaches {acc[names[2]]:.2%}. ")
    if gain > hi - lo:
        text += ("Removing the double softmax moves the accuracy by more than the width of a 95% confidence "
                 "interval on this test set, so most of the report's shortfall came from that bug. The run with "
                 "the double softmax is also the least stable: its gradients are squashed through two softmaxes, "
                 "and changes as small as float rounding (another kernel, `torch.compile` on or off) or the seed "
                 "move its accuracy by several points, so its single number is a rough one.")
    else:
        text += "On this run the double softmax's effect is within the test set's 95% confidence interval."
    return Markdown(text)


def grid_effects(selection: SelectionResult) -> Table | None:
    """Mean validation error for each value of each grid setting, averaged over the rest of the
    grid (a main-effects view; meaningful for full factorial grids such as the profiles')."""
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    rows = []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].agg(["mean", "min", "count"])
        for value, r in means.iterrows():
            rows.append((key, str(value), r["mean"], r["min"], int(r["count"])))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["setting", "value", "mean val error", "best val error", "configs"])
    return Table(df, "Each setting's effect: validation error averaged over the rest of the grid")


def grid_effects_text(selection: SelectionResult) -> Markdown:
    ok = selection.summary[selection.summary["failed_folds"] == 0]
    parts = []
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].mean()
        if len(means) < 2:
            continue
        best, worst = means.idxmin(), means.idxmax()
        if means[worst] - means[best] < 1e-12:
            parts.append(f"**{key}**: the same on average for all its values ({means[best]:.4f})")
            continue
        parts.append(f"**{key}**: best on average at {best} ({means[best]:.4f}), worst at {worst} "
                     f"({means[worst]:.4f}), a spread of {means[worst] - means[best]:.4f}")
    noise = ok["val_error_std"].median()
    text = "; ".join(parts) + "." if parts else "The grid has a single value per setting."
    return Markdown(text + f" For scale, the median standard deviation between folds of one config is {noise:.4f}: "
                           "a spread smaller than that is within noise.")
