"""The course report's study, sections 1 and 4-6 (notebooks 01-03): data, method, final
evaluation, seeds and runner-up, reproduction and ablation, what the model looks at (model
selection's sections are `selection_report`). Each
function returns a `Table` or a `Markdown` built from results, for one notebook cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.display import Markdown
from scipy.stats import spearmanr

from .config import ExperimentConfig
from .data import MNIST
from .report import interval_text, plural, point
from .selection import SELECTION_RULE, SelectionResult
from .stats import mcnemar, mean_std, t_interval, wilson_interval
from .tables import Table


def data_table(data: MNIST, config: ExperimentConfig, number: int) -> Table:
    n, k = len(data.train_images), config.selection.folds
    rows = [
        ("training images", f"{n:,}"),
        ("test images", f"{len(data.test_images):,}"),
        ("folds for model selection", str(k)),
        ("images per fold: train / validation", f"{n - n // k:,} / {n // k:,}"),
    ]
    return Table(pd.DataFrame(rows, columns=["", "value"]), f"Table {number}. The data of this run")


def method_text(config: ExperimentConfig) -> Markdown:
    m, t, s = config.model, config.train, config.selection
    side = m.image_size // m.patch_size
    grid = "; ".join(f"{k} in {v}" for k, v in s.grid.items()) or "none"
    return Markdown(
        f"Each {m.image_size}×{m.image_size} digit is cut into {side * side} patches of {m.patch_size}×{m.patch_size} "
        f"pixels; each patch is embedded linearly in {m.embed_dim} dimensions, a class token is prepended, and "
        f"{'the course report’s fixed sinusoidal 1-D position table' if m.pos_embed == 'sinusoidal' else m.pos_embed + ' position embeddings'} "
        f"is added. Pre-norm encoder blocks ({m.num_heads} attention heads, a GELU MLP) follow, and the class token "
        f"is classified by a linear head{' followed by a softmax (the double softmax)' if m.head_softmax else ''}. "
        f"Training: {t.optimizer.capitalize()} with learning rate {t.lr:g}, batch {t.batch_size}, "
        f"{plural(t.epochs, 'epoch')}, cross-entropy loss, seed {t.seed}. Model selection: {s.folds}-fold "
        f"cross-validation ({'shuffled' if s.shuffle_folds else 'KFold without shuffling, as the course report'}) "
        f"over {grid}; rule: {SELECTION_RULE}. The chosen configuration is then trained once on all training "
        f"images and scored once on the test set."
    )


def final_table(metrics: dict, number: int) -> Table:
    rows = [
        ("training (running, last epoch)", metrics["train_loss"], 1 - metrics["train_error"]),
        ("test", metrics["test_loss"], metrics["test_accuracy"]),
    ]
    df = pd.DataFrame(rows, columns=["set", "cross-entropy loss", "accuracy"])
    return Table(
        df,
        f"Table {number}. The final model after {plural(len(metrics['history']), 'epoch')}",
        formats={"accuracy": "{:.2%}"},
    )


def final_conclusion(metrics: dict, cfg: ExperimentConfig, best: dict) -> Markdown:
    n = metrics["n_test"]
    wrong = round(metrics["test_error"] * n)
    return Markdown(
        f"The selected model ({point(best)}; {metrics['parameters']:,} parameters) reaches a **test accuracy of "
        f"{metrics['test_accuracy']:.2%}** ({wrong:,} of {n:,} test digits wrong) after "
        f"{plural(cfg.train.epochs, 'epoch')} of training on {metrics['n_train']:,} images, in "
        f"{metrics['train_seconds']:.0f} s on {metrics['run']['device']}."
    )


def checkpoint_note(folder: str) -> Markdown:
    return Markdown(
        f"A build keeps the checkpoint, its configuration and metrics in `build/{folder}/final/`; "
        f"`python -m vitlib evaluate build/{folder}/final/checkpoint.pt` scores it again."
    )


def seeds_table(runs: dict, number: int) -> Table:
    rows = [
        (name, m["test_accuracy"], interval_text(m["test_accuracy"], m["n_test"]), m["test_loss"], m["train_seconds"])
        for name, m in runs.items()
        if name != "runner-up"
    ]
    df = pd.DataFrame(rows, columns=["run", "test accuracy", "95% interval (Wilson)", "test loss", "train s"])
    return Table(
        df,
        f"Table {number}. The selected configuration trained with different seeds",
        formats={"test accuracy": "{:.2%}", "train s": "{:.0f}"},
    )


def statistics_conclusion(runs: dict, selection: SelectionResult, table: int) -> Markdown:
    seeds = [m["test_accuracy"] for name, m in runs.items() if name != "runner-up"]
    mean, std = mean_std(seeds)
    first = next(iter(runs.values()))
    lo, hi = wilson_interval(round(first["test_accuracy"] * first["n_test"]), first["n_test"])
    text = (
        f"Over {len(seeds)} seeds (Table {table}) the selected configuration reaches **{mean:.2%} ± {std:.2%}** "
        f"test accuracy (mean ± standard deviation). For one run, the 95% Wilson interval of its test accuracy "
        f"is {lo:.2%} – {hi:.2%} ({(hi - lo) * 100:.2f} points wide): differences between seeds "
        f"{'are larger than' if std * 2 > hi - lo else 'fit within'} what the test set alone can resolve."
    )
    if "runner-up" in runs:
        test = mcnemar(first["test_correct"], runs["runner-up"]["test_correct"])
        verdict = (
            "a significant difference at the 5% level"
            if test["p_value"] < 0.05
            else "no significant difference at the 5% level, so the choice between them is within noise"
        )
        text += (
            f"\n\nAgainst the runner-up of model selection ({point(selection.runner_up())}; test accuracy "
            f"{runs['runner-up']['test_accuracy']:.2%}, same seed), the exact McNemar test on the "
            f"{test['discordant']:,} test images that exactly one of the two gets right "
            f"({test['a_only_right']:,} only the selected, {test['b_only_right']:,} only the runner-up) gives "
            f"p = {test['p_value']:.3g}: {verdict}."
        )
    return Markdown(text)


def _recipe(c: ExperimentConfig) -> tuple[str, str]:
    training = (
        f"{c.train.optimizer}, lr {c.train.lr:g}, {c.train.lr_schedule}"
        + (
            f" + {c.train.warmup_epochs:g} warmup epoch{'' if c.train.warmup_epochs == 1 else 's'}"
            if c.train.warmup_epochs
            else ""
        )
        + (f", wd {c.train.weight_decay:g}" if c.train.weight_decay else "")
    )
    model = (
        ("per-head qkv, no out proj" if c.model.qkv_per_head else "fused qkv + out proj")
        + (", sinusoidal pos" if c.model.pos_embed == "sinusoidal" else f", {c.model.pos_embed} pos")
        + (", final LN" if c.model.final_norm else "")
        + (", input norm" if c.model.normalize_input else "")
        + (", head softmax" if c.model.head_softmax else "")
    )
    return model, training


def ablation_recipes(configs: dict[str, ExperimentConfig]) -> Markdown:
    """What each ablation row changes, one line each."""
    lines = []
    for name, c in configs.items():
        model, training = _recipe(c)
        lines.append(f"- *{name}*: {model}; {training}.")
    return Markdown("\n".join(lines))


def ablation_table(results: dict[str, list[dict]], configs: dict[str, ExperimentConfig], number: int) -> Table:
    rows = []
    for name, per_seed in results.items():
        accs = [m["test_accuracy"] for m in per_seed]
        mean, std = mean_std(accs)
        lo, hi = t_interval(accs)
        rows.append(
            (
                name,
                f"{per_seed[0]['parameters']:,}",
                f"{mean:.2%} ± {std:.2%}",
                f"{lo:.2%} – {hi:.2%}",
                ", ".join(f"{a:.2%}" for a in accs),
            )
        )
    df = pd.DataFrame(rows, columns=["recipe", "parameters", "test accuracy", "95% interval", "each seed"])
    c = next(iter(configs.values()))
    n = len(next(iter(results.values())))
    return Table(
        df,
        f"Table {number}. Reproduction and ablation at the course report's chosen size (depth "
        f"{c.model.depth}, MLP {c.model.mlp_hidden_dim}, embed {c.model.embed_dim}), batch "
        f"{c.train.batch_size}, {plural(c.train.epochs, 'epoch')}: test accuracy mean ± std over seeds "
        f"{c.train.seed}–{c.train.seed + n - 1}, Student-t interval of the mean",
        widths={"recipe": "3.6cm", "each seed": "3.4cm"},
    )


def ablation_conclusion(results: dict[str, list[dict]], claimed: float, table: int) -> Markdown:
    names = list(results)
    stats = {name: mean_std([m["test_accuracy"] for m in results[name]]) for name in names}
    (bug, bug_sd), (fixed, fixed_sd), (modern, modern_sd) = (stats[n] for n in names[:3])
    n = len(results[names[0]])
    gain = fixed - bug
    text = (
        f"Table {table}: with the head softmax, as the course report trained it, the model reaches "
        f"{bug:.2%} ± {bug_sd:.2%} over {n} seeds (the course report claimed {claimed:.0%}); without it, the "
        f"same model and protocol reach {fixed:.2%} ± {fixed_sd:.2%} ({gain * 100:+.2f} points). At a similar "
        f"tiny size ({results[names[2]][0]['parameters']:,} parameters against {results[names[1]][0]['parameters']:,}), "
        f"a modern recipe reaches {modern:.2%} ± {modern_sd:.2%}. "
    )
    if gain > 2 * max(bug_sd, fixed_sd):
        text += (
            "Removing the double softmax moves the accuracy by more than twice the seed spread of either "
            "row, so most of the course report's shortfall came from that bug."
        )
    else:
        text += "On these seeds, the double softmax's effect is within twice the seed spread."
    widest = max(names, key=lambda name: stats[name][1])
    text += (
        f" The widest spread over seeds is that of *{widest}*, a standard deviation of "
        f"{stats[widest][1]:.2%}; with {n} seeds per row, that ranking is itself uncertain."
    )
    return Markdown(text)


def position_text(similarity, embed_dim: int, kind: str) -> Markdown:
    """What this run's position table does to 2-D neighbours, in numbers read off Figure 8's data."""
    sim = np.asarray(similarity)
    side = int(round(len(sim) ** 0.5))
    i, j = np.triu_indices(len(sim), k=1)
    (ri, ci), (rj, cj) = np.divmod(i, side), np.divmod(j, side)
    across = sim[i, j][(ri == rj) & (abs(ci - cj) == 1)].mean()
    down = sim[i, j][(ci == cj) & (abs(ri - rj) == 1)].mean()
    far = (ri == rj) & (abs(ci - cj) == side - 1)
    in_image = spearmanr(np.hypot(ri - rj, ci - cj), sim[i, j])[0]
    in_order = spearmanr(j - i, sim[i, j])[0]
    text = (
        f"In this model's {kind} table ({embed_dim} dimensions), patches side by side in a row have a cosine "
        f"similarity of {across:.2f} on average and patches one above the other {down:.2f}, while the first and "
        f"last patch of a row reach {sim[i, j][far].mean():.2f}. Similarity falls with distance only loosely: "
        f"its rank correlation with the distance in the image is {in_image:.2f}, and with the distance in "
        f"reading order {in_order:.2f}."
    )
    offset = j - i
    by_offset = {k: sim[i, j][offset == k].mean() for k in range(1, len(sim))}
    echoes = [k for k in range(2, len(sim)) if by_offset[k] >= by_offset[1] - 0.05]
    if echoes:
        listed = [str(k) for k in echoes[:6]]
        shown = (", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]) + (
            " and more" if len(echoes) > 6 else ""
        )
        text += (
            f" Positions {shown} apart in reading order are on average as alike as direct neighbours "
            f"(cosine {by_offset[1]:.2f} or more): the table gives each position a code that repeats, which "
            f"the model must learn to read; it is not a map of the digit."
        )
    return Markdown(text)
