"""The laptop study's tables and prose (notebook 05): the recipe, the candidates on the
validation split, the shifted copies, the ingredients, the final model and its disclosure. Each
function returns a `Table` or a `Markdown` built from results, for one notebook cell."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from .config import ExperimentConfig
from .experiment import score_before_rescoring
from .report import interval_text, minutes, number_word, plural, runner_up, seconds_per_epoch
from .stats import mcnemar, wilson_interval
from .tables import Table


def recipe_table(config: ExperimentConfig, parameters: int, number: int) -> Table:
    m, t = config.model, config.train
    side = m.image_size // m.patch_size
    augmentation = (
        f"random rotation ±{t.aug_degrees:g}°, shift ±{t.aug_translate:.0%}, zoom ±{t.aug_scale:.0%}"
        if t.aug_degrees or t.aug_translate or t.aug_scale
        else "none"
    )
    if t.aug_elastic_alpha:
        elastic = f"elastic distortion (alpha {t.aug_elastic_alpha:g}, sigma {t.aug_elastic_sigma:g} px)"
        augmentation = elastic if augmentation == "none" else f"{augmentation}, {elastic}"
    rows = [
        ("patches", f"{m.patch_size}×{m.patch_size} pixels, {side * side} tokens + a class token, linear embedding"),
        ("encoder", f"{m.depth} pre-norm blocks, width {m.embed_dim}, {m.num_heads} heads, MLP {m.mlp_hidden_dim}"),
        ("parameters", f"{parameters:,}"),
        ("optimizer", f"{t.optimizer}, peak lr {t.lr:g}, weight decay {t.weight_decay:g}, batch {t.batch_size}"),
        (
            "schedule",
            f"{t.lr_schedule}"
            + (f" after {t.warmup_epochs:g} warmup epochs" if t.warmup_epochs else "")
            + f", {plural(t.epochs, 'epoch')}",
        ),
        ("regularization", f"label smoothing {t.label_smoothing:g}, stochastic depth {m.drop_path_rate:g}"),
        ("augmentation", augmentation + " (on tensors, one affine grid per batch)"),
        (
            "weights kept",
            (f"exponential moving average, decay {t.ema_decay:g}" if t.ema_decay else "the last ones")
            + (", stored as float16 (the test accuracy is of these rounded weights)" if t.save_float16 else ""),
        ),
        ("execution", ("torch.compile, " if t.compile else "eager, ") + ("bfloat16 autocast" if t.amp else "float32")),
        ("prediction", _prediction(m.test_shifts)),
    ]
    return Table(
        pd.DataFrame(rows, columns=["", "the laptop recipe"]),
        f"Table {number}. The recipe of the laptop preset",
        widths={"the laptop recipe": "11cm"},
    )


def _prediction(shifts: int) -> str:
    if not shifts:
        return "from the digit alone"
    return (
        f"class probabilities averaged over the digit and its 4 copies shifted {shifts} px up, down, left "
        "and right (test-time augmentation; training does not see it)"
    )


def candidates_table(
    candidates: dict[str, dict], chosen: str, number: int, views: dict[str, dict] | None = None
) -> Table:
    """The candidates' validation errors; with `views` (LaptopStudy.test_views), also with shifted copies."""
    rows = [
        (
            name + (" (chosen)" if name == chosen else ""),
            f"{m['parameters']:,}",
            len(m["history"]),
            f"{seconds_per_epoch(m):.0f}",
            m["test_error"],
            round(m["test_error"] * m["n_test"]),
        )
        + ((views[name]["error"], round(views[name]["error"] * m["n_test"])) if views else ())
        for name, m in candidates.items()
    ]
    n_val, n_train = next(iter(candidates.values()))["n_test"], next(iter(candidates.values()))["n_train"]
    columns = ["recipe", "parameters", "epochs", "s / epoch", "validation error", "wrong"]
    df = pd.DataFrame(rows, columns=columns + (["with shifted copies", "wrong "] if views else []))
    return Table(
        df,
        f"Table {number}. The candidates, trained on {n_train:,} training images and scored on the "
        f"{n_val:,} held out; chosen: the lowest validation error (the first listed on a tie)"
        + (
            ". The last two columns score the same weights again, averaging over each digit and its shifted "
            "copies (Section 2.1)"
            if views
            else ""
        ),
        formats={"validation error": "{:.2%}", "with shifted copies": "{:.2%}"},
        widths={"recipe": "4.4cm" if views else "5.2cm"},
    )


def test_views_text(
    candidates: dict[str, dict], views: dict[str, dict], chosen: str, shifts: int, table: int, tested: float | None
) -> Markdown:
    """What averaging over shifted copies did on the validation split, and what the rule made of it.
    `tested`: the single-view test accuracy that was seen before this choice, if one was."""
    n = candidates[chosen]["n_test"]
    gained = [name for name in candidates if views[name]["error"] < candidates[name]["test_error"]]
    test = mcnemar(views[chosen]["correct"], candidates[chosen]["test_correct"])
    before, after = candidates[chosen]["test_error"], views[chosen]["error"]
    text = (
        f"A trained model can also be asked about each digit more than once: here, about the digit and its four "
        f"copies moved by one pixel up, down, left and right, with the class probabilities averaged "
        f"(test-time augmentation, the cheapest kind: five passes, no training). Table {table}'s last columns "
        f"score each candidate's own weights so on the same held-out digits: "
        + (
            "every candidate's error falls"
            if len(gained) == len(candidates)
            else f"{plural(len(gained), 'candidate')} of {len(candidates)} improve"
        )
        + f"; the chosen recipe's from {before:.2%} to {after:.2%} ({round(before * n)} → {round(after * n)} of "
        f"{n:,} wrong; {test['a_only_right']} digits right only with the copies, {test['b_only_right']} only "
        f"without, exact McNemar p = {test['p_value']:.2f}). "
    )
    if test["p_value"] >= 0.05 and len(gained) == len(candidates) > 1:
        text += (
            f"On one model, a gain of this size is within what chance gives on {n:,} digits; that all "
            f"{len(candidates)} candidates, trained separately, gain is the stronger evidence. "
        )
    rule = (
        "The rule, fixed before the copies were scored on the test set: predict with them if they lower the "
        "chosen recipe's validation error."
    )
    if shifts:
        text += f"{rule} They do, so the final model predicts so (Table 1). "
    else:
        text += f"{rule} They do not, so the final model reads each digit alone. "
    if tested is not None:
        text += (
            f"This was tried only after the final model of Section 4 had been tested reading each digit alone "
            f"({tested:.2%}, short of 99.5%): the test set decided, once more, that the search went on, and the "
            "validation split decided what to do. Section 4 gives both test numbers."
        )
    return Markdown(text)


def candidates_text(
    candidates: dict[str, dict], chosen: str, final_epochs: int, table: int, figure: int, withdrawn: bool = False
) -> Markdown:
    first = next(iter(candidates.values()))
    n = first["n_test"]
    err = candidates[chosen]["test_error"]
    lo, hi = wilson_interval(round((1 - err) * n), n)
    others = [name for name in candidates if name != chosen]
    tie = any(candidates[o]["test_error"] == err for o in others)
    text = (
        f"Table {table} and Figure {figure}: *{chosen}* {'ties for' if tie else 'reaches'} the lowest validation error, "
        f"{err:.2%} ({round(err * n)} of {n:,} held-out digits wrong; 95% interval of the accuracy "
        f"{lo:.2%} – {hi:.2%}), against "
        + ", ".join(f"{candidates[o]['test_error']:.2%} for *{o}*" for o in others)
        + ". "
    )
    second = runner_up(candidates, chosen)
    test = mcnemar(candidates[chosen]["test_correct"], candidates[second]["test_correct"])
    text += (
        f"On the same held-out digits, {test['a_only_right']} are right only for the chosen recipe and "
        f"{test['b_only_right']} only for {'the other one at that error' if tie else 'the runner-up'}, *{second}* "
        f"(exact McNemar test, p = {test['p_value']:.2f}): "
        + (
            "the two may be equally good; on a tie the rule keeps the candidate listed first (the earlier one). "
            if tie
            else "a margin unlikely to be chance. "
            if test["p_value"] < 0.05
            else f"a margin within what chance gives on {n:,} digits, so the two recipes may be equally good; "
            "the rule picks the lower error all the same. "
        )
    )
    text += (
        "The candidates ran at different times on a shared machine, most of them two at a time with one thread "
        "each, so their seconds per epoch compare them only roughly with each other (a shared machine's speed "
        "moves), and not with the final model's. The test set played no part in this choice"
        + (
            " (it did decide that the search went on: Section 4 discloses the final models that were tested "
            "and withdrawn, and why)"
            if withdrawn
            else ""
        )
        + f": the final model below is this recipe, trained once on all training images for "
        f"{plural(final_epochs, 'epoch')}."
    )
    return Markdown(text)


def ingredients_table(rows: dict[str, dict], number: int) -> Table:
    base = rows["all ingredients"]["test_error"]
    table = [
        (
            name,
            m["test_error"],
            "" if name == "all ingredients" else f"{(m['test_error'] - base) * 100:+.2f}",
            f"{seconds_per_epoch(m):.0f}",
        )
        for name, m in rows.items()
    ]
    first = next(iter(rows.values()))
    df = pd.DataFrame(table, columns=["run", "validation error", "change (points)", "s / epoch"])
    return Table(
        df,
        f"Table {number}. What each ingredient buys: the chosen recipe without it, "
        f"{plural(len(first['history']), 'epoch')}, scored on the {first['n_test']:,} held-out "
        f"training images (one seed; + means worse without it)",
        formats={"validation error": "{:.2%}"},
        widths={"run": "6.5cm"},
    )


def ingredients_text(rows: dict[str, dict], full_epochs: int, table: int) -> Markdown:
    base = rows["all ingredients"]
    n = base["n_test"]
    p = base["test_error"]
    noise = (2 * p * (1 - p) / n) ** 0.5  # std of the difference of two independent error rates on n images
    changes = {name: m["test_error"] - p for name, m in rows.items() if name != "all ingredients"}
    helped = sorted((k for k in changes if changes[k] > 2 * noise), key=changes.get, reverse=True)
    hurt = [k for k in changes if changes[k] < -2 * noise]
    epochs = len(base["history"])
    text = (
        f"Table {table}: each row removes (or replaces) one ingredient of the chosen recipe and trains it for {epochs} of "
        f"the recipe's {full_epochs} epochs on the same split. With {n:,} validation images, a difference "
        f"of two error rates near {p:.2%} has a standard deviation of about {noise * 100:.2f} points, so only "
        f"changes beyond {2 * noise * 100:.2f} points are told apart from noise. "
    )
    if helped:
        said = [
            f"removing *{k.removeprefix('without ')}*" if k.startswith("without ") else f"*{k}* instead" for k in helped
        ]
        said = [f"{s} ({changes[k] * 100:+.2f})" for s, k in zip(said, helped)]
        listed = said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]
        text += f"{listed[0].upper()}{listed[1:]} cost{'s' if len(said) == 1 else ''} more than that. "
    else:
        text += "No single removal costs more than that at this schedule. "
    if hurt:
        text += (
            "At this short schedule, "
            + ", ".join(f"*{k}* ({changes[k] * 100:+.2f})" for k in hurt)
            + " even does better: regularizers pay off over long training, which these runs do not reach. "
        )
    text += (
        "One seed per row: a rerun with another seed would move each row by about the same noise. The "
        "seconds per epoch say how fast these runs went on the machine as it was then, other work included, "
        "and compare only with each other."
    )
    return Markdown(text)


def laptop_final_table(metrics: dict, number: int) -> Table:
    n = metrics["n_test"]
    wrong = round(metrics["test_error"] * n)
    run = metrics["run"]
    rows = [
        ("parameters", f"{metrics['parameters']:,}"),
        ("training images", f"{metrics['n_train']:,} (all; nothing held out)"),
        ("epochs", str(len(metrics["history"]))),
        (
            "training time (wall clock, test pass after each epoch included)",
            f"{minutes(metrics['train_seconds'])} ({seconds_per_epoch(metrics):.0f} s per epoch)",
        ),
        ("machine", f"{run['device_name']}, {run['cpu_threads']} threads, {run['device']}, torch {run['torch']}"),
        ("test accuracy", f"{metrics['test_accuracy']:.2%} ({wrong} of {n:,} digits wrong)"),
        ("95% interval (Wilson)", interval_text(metrics["test_accuracy"], n)),
    ]
    if "test_accuracy_single_view" in metrics:  # the model predicts from shifted copies
        alone = metrics["test_error_single_view"]
        rows[-2] = ("test accuracy, with the shifted copies", rows[-2][1])
        rows.append(("test accuracy, the digit alone", f"{1 - alone:.2%} ({round(alone * n)} of {n:,} digits wrong)"))
    return Table(
        pd.DataFrame(rows, columns=["", "the laptop model"]),
        f"Table {number}. The final model: the chosen recipe trained once on all training images and "
        + (
            "tested: reading each digit alone, then with the shifted copies the validation split chose (Section 2.1)"
            if "rescored" in metrics
            else "tested once"
        ),
        widths={"": "5.5cm", "the laptop model": "9cm"},
    )


def withdrawn_note(withdrawn: dict[str, dict], final: dict) -> Markdown:
    """Every final model that was tested and then replaced ({recipe: metrics with 'why'}), said
    beside the one that stands."""
    if not withdrawn:
        return Markdown("")
    said = []
    for recipe, m in withdrawn.items():
        n, seconds = m["n_test"], [e["seconds"] for e in m["history"]]
        said.append(
            f"*{recipe}* scored {m['test_accuracy']:.2%} ({round(m['test_error'] * n)} of {n:,} wrong) after "
            f"{minutes(m['train_seconds'])} of training, its epochs {sum(seconds) / len(seconds):.1f} s on average "
            f"alone on the cores. {m['why']}"
        )
    earlier = "An earlier final model was" if len(said) == 1 else f"{number_word(len(said))} earlier final models were"
    return Markdown(
        f"Disclosed: {earlier} trained and tested before this one and withdrawn. "
        + " ".join(said)
        + f" The recipe of Table 1 ({plural(len(final['history']), 'epoch')}) was then trained once, "
        f"in {minutes(final['train_seconds'])}: the model of Table 4. "
        + (
            f"Its own first score, {before:.2%} reading each digit alone, fell short too; only then were the "
            "elastic candidate and the shifted copies tried on the validation split (Sections 2 and 2.1). "
            if (before := score_before_rescoring(final)) is not None
            else ""
        )
        + "Every test number above has been seen; none of them ranked the candidates or set the prediction."
    )


def laptop_abstract(results: dict, final: dict, config: ExperimentConfig) -> Markdown:
    n = results["numbers"]
    p = config.model.patch_size
    acc, lo, hi = (
        n[k]["value"] for k in ("final.test_accuracy", "final.test_accuracy.ci_low", "final.test_accuracy.ci_high")
    )
    shifted = "final.test_accuracy_single_view" in n
    chosen_so = shifted and n.get("laptop.test_shifts", {}).get("value") == config.model.test_shifts
    before = n.get("final.test_accuracy_before_rescoring", {}).get("value")
    text = (
        f"A Vision Transformer trained from scratch on MNIST — {p}×{p}-pixel patches embedded linearly, no "
        f"convolution, no pre-training, no extra data — reaches **{acc:.2%} test accuracy** (95% interval "
        f"{lo:.2%} – {hi:.2%}) with {n['final.parameters']['value']:,} parameters, after "
        f"{minutes(final['train_seconds'])} of training on {final['run']['cpu_threads']} CPU threads "
        f"({final['run']['device_name']})"
    )
    if shifted:
        text += (
            f", predicting from each digit and its four copies shifted by {config.model.test_shifts} px "
            f"(reading each digit alone: {n['final.test_accuracy_single_view']['value']:.2%})"
        )
    text += f". The recipe, *{n['laptop.chosen']['value']}*, was chosen on 5,000 training images held out for " + (
        "validation, and so was the prediction from shifted copies. " if chosen_so else "validation. "
    )
    if before is not None:
        text += (
            "No test number ranked the recipes or set the prediction, but one decided that the search went on: "
            f"this model was first scored reading each digit alone ({before:.2%}), and only then were the "
            "shifted copies tried on the validation split (Section 2.1)"
        )
    else:
        text += "No test number chose anything (the per-epoch test curve included)"
    withdrawn = sum(k.startswith("withdrawn.") for k in n)
    if withdrawn:
        text += (
            f"; the test numbers of {plural(withdrawn, 'earlier final model')}, tested and withdrawn, are "
            "disclosed in Section 4 with the reasons"
        )
    return Markdown(text + ".")


def laptop_checkpoint_note(folder: str) -> Markdown:
    return Markdown(
        f"The checkpoint, its configuration and metrics are in `{folder}/`; "
        f"`python -m vitlib evaluate {folder}/checkpoint.pt` scores it again (with the shifted copies its "
        "configuration asks for; `--single-view` reads each digit alone), and "
        f"`python -m vitlib train --preset laptop --out runs/laptop` trains it again."
    )
