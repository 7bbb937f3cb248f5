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
from .report import OPTIMIZER_NAMES, caption, interval_text, plural, point
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


def learning_curves_caption(metrics: dict, number: int) -> Markdown:
    h = metrics["history"]
    best = min(h, key=lambda e: e["eval_error"])
    return caption(
        "Figure",
        number,
        "Learning curves of the final model: cross-entropy and misclassification error per epoch, on the "
        f"training batches (running) and on the test set. The test error falls from {h[0]['eval_error']:.2%} "
        f"after the first epoch to {h[-1]['eval_error']:.2%} after the last"
        + (f" (lowest, {best['eval_error']:.2%}, after epoch {best['epoch']})." if best is not h[-1] else "."),
    )


def confusion_caption(labels, predicted, number: int) -> Markdown:
    """Figure `number` (the confusion matrix), with its most frequent confusion."""
    pairs = pd.crosstab(pd.Series(labels.numpy(), name="true"), pd.Series(predicted.numpy(), name="predicted"))
    off = pairs.stack()
    off = off[[t != p for t, p in off.index]]
    text = "Confusion matrix of the final model on the test set: true digit (rows) against prediction (columns)."
    if len(off) and off.max() > 0:
        (t, p), count = off.idxmax(), int(off.max())
        text += f" The most frequent mistake reads {_a(t)} {t} as {_a(p)} {p} ({count:,} of {int((labels == t).sum()):,} test {t}s)."
    return caption("Figure", number, text)


def _a(digit) -> str:
    return "an" if int(digit) == 8 else "a"


def per_digit_caption(accuracy, number: int) -> Markdown:
    error = (1 - accuracy.numpy()) * 100
    labels = error.round(1)  # as the bars are labelled: digits that read the same are named together
    hardest = [str(d) for d in range(len(error)) if labels[d] == labels.max()]
    easiest = [str(d) for d in range(len(error)) if labels[d] == labels.min()]
    return caption(
        "Figure",
        number,
        f"Test error of the final model per digit (bars from zero, labelled in %). The hardest "
        f"{'digit is ' + hardest[0] if len(hardest) == 1 else 'digits are ' + ' and '.join(hardest)} "
        f"({labels.max():.1f}% wrong), the easiest "
        f"{easiest[0] if len(easiest) == 1 else ' and '.join(easiest)} ({labels.min():.1f}%).",
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
        f"{metrics['train_seconds']:.0f} s on {_device_in_words(metrics['run'])}."
    )


def _a(digit) -> str:
    """The article before a digit read aloud: "an 8", "a 3"."""
    return "an" if str(digit) == "8" else "a"


def _device_in_words(run: dict) -> str:
    """'2 threads of an Intel(R) Xeon(R) Processor' for a CPU run, the GPU's name for a GPU run."""
    name = run.get("device_name") or run["device"]
    if run["device"] != "cpu" or not run.get("cpu_threads"):
        return name
    return f"{plural(run['cpu_threads'], 'thread')} of {'an' if name[0] in 'AEIOU' else 'a'} {name}"


def checkpoint_note(folder: str) -> Markdown:
    return Markdown(
        f"The final model's checkpoint is not committed (`make report` trains it again); a build keeps it, "
        f"with its configuration and metrics, in `build/{folder}/final/`, and "
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
        text += "\n\n" + runner_up_text(runs, selection)
    return Markdown(text)


def runner_up_text(runs: dict, selection: SelectionResult) -> str:
    """The selected configuration against the runner-up of selection: McNemar on the one pair of
    runs that share a seed, and whether the runner-up lies outside the selected one's seed range
    (one pair of runs cannot say which *configuration* is better when the seeds overlap)."""
    first, other = next(iter(runs.values())), runs["runner-up"]
    seeds = [m["test_accuracy"] for name, m in runs.items() if name != "runner-up"]
    test = mcnemar(first["test_correct"], other["test_correct"])
    below = sum(a < other["test_accuracy"] for a in seeds)
    text = (
        f"Against the runner-up of model selection ({point(selection.runner_up())}; test accuracy "
        f"{other['test_accuracy']:.2%}, same seed as the final model), the exact McNemar test on the "
        f"{test['discordant']:,} test images that exactly one of the two gets right "
        f"({test['a_only_right']:,} only the selected, {test['b_only_right']:,} only the runner-up) gives "
        f"p = {test['p_value']:.2g}"
    )
    if below:
        return text + (
            f". That compares two runs, not two configurations: {below} of the selected configuration's "
            f"{len(seeds)} seeds score below the runner-up, so over seeds the two are not told apart."
        )
    if test["p_value"] < 0.05:
        return text + (
            f": these two runs differ at the 5% level, and all {len(seeds)} seeds of the selected "
            f"configuration score above the runner-up (which has one seed)."
        )
    return text + ": no difference at the 5% level between these two runs."


def _recipe(c: ExperimentConfig) -> tuple[str, str]:
    """A recipe in words: (the model, its training)."""
    schedule = {"constant": "a constant learning rate", "cosine": "cosine decay of the learning rate"}
    training = (
        f"{OPTIMIZER_NAMES.get(c.train.optimizer, c.train.optimizer)}, learning rate "
        f"{c.train.lr:g}, {schedule.get(c.train.lr_schedule, c.train.lr_schedule + ' schedule')}"
        + (
            f" after {c.train.warmup_epochs:g} warm-up epoch{'' if c.train.warmup_epochs == 1 else 's'}"
            if c.train.warmup_epochs
            else ""
        )
        + (f", weight decay {c.train.weight_decay:g}" if c.train.weight_decay else "")
    )
    model = (
        (
            "separate query, key and value maps per head and no output projection (the original attention)"
            if c.model.qkv_per_head
            else "standard attention (one query-key-value map and an output projection)"
        )
        + ("; fixed sinusoidal positions" if c.model.pos_embed == "sinusoidal" else f"; {c.model.pos_embed} positions")
        + ("; a LayerNorm before the head" if c.model.final_norm else "")
        + ("; inputs normalised to zero mean and unit variance" if c.model.normalize_input else "")
        + ("; a softmax in the head (then the loss applies one again)" if c.model.head_softmax else "")
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
                str(len(accs)),
                f"{mean:.2%} ± {std:.2%}",
                f"{lo:.2%} – {hi:.2%}",
                f"{min(accs):.2%} – {max(accs):.2%}",
            )
        )
    df = pd.DataFrame(
        rows, columns=["recipe", "parameters", "seeds", "test accuracy", "95% interval of the mean", "lowest – highest"]
    )
    c = next(iter(configs.values()))
    return Table(
        df,
        f"Table {number}. Reproduction and ablation at the course report's chosen size (depth "
        f"{c.model.depth}, MLP {c.model.mlp_hidden_dim}, embedding {c.model.embed_dim}), batch "
        f"{c.train.batch_size}, {plural(c.train.epochs, 'epoch')}: test accuracy, mean ± standard deviation "
        f"over seeds {c.train.seed}, {c.train.seed + 1}, … (Student-t interval of the mean)",
        widths={"recipe": "3.6cm"},
    )


def seed_spread_caption(results: dict[str, list[dict]], claimed: float, number: int) -> Markdown:
    """What Figure `number` (plots.seed_spread) shows, with the numbers that say it."""
    names = list(results)
    bug = [m["test_accuracy"] for m in results[names[0]]]
    fixed = [m["test_accuracy"] for m in results[names[1]]]
    return caption(
        "Figure",
        number,
        f"Test accuracy of every seed of each recipe in Table 7 (dots; bar: the mean), and the course report's "
        f"{claimed:.0%} (dashed). With the double softmax the seeds range over {(max(bug) - min(bug)) * 100:.1f} "
        f"points ({min(bug):.2%} – {max(bug):.2%}); without it over {(max(fixed) - min(fixed)) * 100:.1f} points.",
    )


def ablation_conclusion(results: dict[str, list[dict]], claimed: float, table: int, figure: int) -> Markdown:
    names = list(results)
    accs = {name: [m["test_accuracy"] for m in results[name]] for name in names}
    stats = {name: mean_std(accs[name]) for name in names}
    (bug, bug_sd), (fixed, fixed_sd), (modern, modern_sd) = (stats[n] for n in names[:3])
    bugs, fixes = accs[names[0]], accs[names[1]]
    text = (
        f"Table {table} and Figure {figure}: with the head softmax, as the course report trained it, the model "
        f"reaches {bug:.2%} ± {bug_sd:.2%} over {len(bugs)} seeds, from {min(bugs):.2%} to {max(bugs):.2%}; "
        f"the course report's {claimed:.0%} "
        + (
            f"lies inside that range ({sum(a < claimed for a in bugs)} of {len(bugs)} seeds score lower): "
            "an ordinary draw of the double softmax."
            if min(bugs) <= claimed <= max(bugs)
            else f"lies {'below' if claimed < min(bugs) else 'above'} every seed here."
        )
        + f" Without it, the same model and protocol reach {fixed:.2%} ± {fixed_sd:.2%} over {len(fixes)} seeds "
        f"({(fixed - bug) * 100:+.2f} points on average)"
        + (
            ", and every seed scores above every seed with the double softmax: most of the course report's "
            "shortfall came from that bug."
            if min(fixes) > max(bugs)
            else ", but the two rows' seeds overlap."
        )
        + f" At a similar tiny size ({results[names[2]][0]['parameters']:,} parameters against "
        f"{results[names[1]][0]['parameters']:,}), a modern recipe reaches {modern:.2%} ± {modern_sd:.2%}. "
        f"The double softmax also makes training erratic: its standard deviation over seeds is {bug_sd:.2%}, "
        f"against {fixed_sd:.2%} without it."
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
        below = f" ({side} apart is the patch straight below in the image)" if side in echoes[:6] else ""
        text += (
            f" Positions {shown} apart in reading order{below} are on average as alike as neighbours in reading "
            f"order (cosine {by_offset[1]:.2f} or more): the table gives each position a code that repeats, which "
            f"the model must learn to read; it is not a map of the digit."
        )
    return Markdown(text)
