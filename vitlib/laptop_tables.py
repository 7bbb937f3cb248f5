"""The laptop report's tables (notebook 05): the recipe, the candidates on the validation split,
the ingredients, the final model and the test scores seen before the final choice. Each function
returns a `Table` (or a `Markdown` note) for one notebook cell."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from .config import ExperimentConfig
from .report import OPTIMIZER_NAMES, interval_text, minutes, plural, seconds_per_epoch, signed_points
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
        (
            "optimizer",
            f"{OPTIMIZER_NAMES.get(t.optimizer, t.optimizer)}, peak learning rate {t.lr:g}, "
            f"weight decay {t.weight_decay:g}, batch {t.batch_size}",
        ),
        (
            "schedule",
            f"{t.lr_schedule}"
            + (f" after {t.warmup_epochs:g} warm-up epochs" if t.warmup_epochs else "")
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
    """The candidates' validation errors; with `views` (Study.views), also with shifted copies."""
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


def ingredients_table(rows: dict[str, dict], number: int) -> Table:
    base = rows["all ingredients"]["test_error"]
    table = [
        (
            name,
            m["test_error"],
            "" if name == "all ingredients" else signed_points((m["test_error"] - base) * 100),
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
            "tested with the shifted copies the validation split chose (Section 2.1), and reading each digit alone"
            if "test_accuracy_single_view" in metrics
            else "tested once"
        ),
        widths={"": "5.5cm", "the laptop model": "9cm"},
    )


def laptop_checkpoint_note(folder: str) -> Markdown:
    return Markdown(
        f"The checkpoint, its configuration and metrics are in `{folder}/`; "
        f"`python -m vitlib evaluate {folder}/checkpoint.pt` scores it again (with the shifted copies its "
        "configuration asks for; `--single-view` reads each digit alone), and "
        f"`python -m vitlib train --preset laptop --out runs/laptop` trains it again."
    )


def seen_table(
    seen: pd.DataFrame, candidates: dict[str, dict], views: dict[str, dict], chosen: str, final: dict, number: int
) -> Table | Markdown:
    """The timeline of test scores seen before the final choice (`laptop.test_scores_seen`): each
    step's trigger, the validation error of the candidate it came from, its test score and the
    decision that followed; the last row is the final model as reported."""
    if seen.empty:
        return Markdown("")

    def val(name: str, shifted: bool = False) -> str:
        if not name:
            return "not scored on it"
        error = views[name]["error"] if shifted else candidates[name]["test_error"]
        return f"{error:.2%}"

    def test(accuracy: float, n: int) -> str:
        return f"{accuracy:.2%} ({round((1 - accuracy) * n)} wrong)"

    rows = [
        (str(i), r.trigger, r.model, val(r.candidate), test(r.test_accuracy, r.n_test), r.decision)
        for i, r in enumerate(seen.itertuples(), start=1)
    ]
    rows.append(
        (
            str(len(rows) + 1),
            "The validation split chose prediction from shifted copies for the chosen recipe (Section 2.1).",
            f"{chosen}, predicting from shifted copies (the final model)",
            val(chosen, shifted=True),
            test(final["test_accuracy"], final["n_test"]),
            "Reported (Table 4). The search stopped here.",
        )
    )
    return Table(
        pd.DataFrame(
            rows, columns=["step", "what triggered it", "model", "validation error", "test score seen", "decision"]
        ),
        f"Table {number}. The test scores seen before the final choice, in order, and the final model's. "
        "Validation errors ranked the candidates; these test scores decided only whether the search went on (the "
        "per-epoch test curves, as in Figure 2, decided nothing)",
        widths={"what triggered it": "3.9cm", "model": "2.6cm", "test score seen": "1.9cm", "decision": "3.9cm"},
    )
