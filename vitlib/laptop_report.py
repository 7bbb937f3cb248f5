"""The laptop report's prose (notebook 05): the abstract, and what the candidates, the shifted
copies and the ingredients show. Each function returns a `Markdown` built from results, for one
notebook cell; the tables are in `vitlib.laptop_tables`."""

from __future__ import annotations

from IPython.display import Markdown

from .config import ExperimentConfig
from .report import minutes, number_word, plural, runner_up, signed_points
from .stats import mcnemar, wilson_interval


def candidates_text(
    candidates: dict[str, dict], chosen: str, final_epochs: int, table: int, figure: int, seen: int = 0
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
            " (it did decide that the search went on: Section 4 lists the test scores seen before the final "
            "choice, and what followed each)"
            if seen
            else ""
        )
        + f": the final model below is this recipe, trained once on all training images for "
        f"{plural(final_epochs, 'epoch')}."
    )
    return Markdown(text)


def test_views_text(
    candidates: dict[str, dict], views: dict[str, dict], chosen: str, shifts: int, table: int, seen: int = 0
) -> Markdown:
    """What averaging over shifted copies did on the validation split, and what the rule made of it.
    `seen`: how many test scores were seen before the final choice (Section 4 lists them)."""
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
    if seen:
        text += "A test score decided that this rule was tried (Table 5); the validation split decided its outcome."
    return Markdown(text)


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
        said = [f"{s} ({signed_points(changes[k] * 100)})" for s, k in zip(said, helped)]
        listed = said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]
        text += f"{listed[0].upper()}{listed[1:]} cost{'s' if len(said) == 1 else ''} more than that. "
    else:
        text += "No single removal costs more than that at this schedule. "
    if hurt:
        text += (
            "At this short schedule, "
            + ", ".join(f"*{k}* ({signed_points(changes[k] * 100)})" for k in hurt)
            + " even does better: regularizers pay off over long training, which these runs do not reach. "
        )
    text += (
        "One seed per row: a rerun with another seed would move each row by about the same noise. The "
        "seconds per epoch say how fast these runs went on the machine as it was then, other work included, "
        "and compare only with each other."
    )
    return Markdown(text)


def last_epochs_text(history: list[dict]) -> str:
    """The test error at the end of training, and its lowest (nothing is chosen from it)."""
    best = min(history, key=lambda e: e["eval_error"])
    text = f"The test error after the last epoch is {history[-1]['eval_error']:.2%}"
    if best is not history[-1]:
        text += (
            f"; its lowest, {best['eval_error']:.2%}, came after epoch {best['epoch']}, but no epoch is chosen by "
            "the test set: the last one's weights are the model"
        )
    return text + "."


def validation_curves_caption(candidates: dict[str, dict], chosen: str, number: int) -> Markdown:
    others = [m["test_error"] for name, m in candidates.items() if name != chosen]
    return Markdown(
        f"**Figure {number}.** Validation error per epoch of each candidate (EMA weights), the axis cut to show "
        f"the last epochs. The chosen recipe ends at {candidates[chosen]['test_error']:.2%}, the others between "
        f"{min(others):.2%} and {max(others):.2%}: a few held-out digits apart."
    )


def recipe_text(config: ExperimentConfig) -> Markdown:
    """The recipe in words, as this profile's configuration has it."""
    m, t = config.model, config.train
    augment = "random affine augmentation (rotation, shift, scale) computed on the batch's tensors" + (
        ", then elastic distortion" if t.aug_elastic_alpha else ""
    )
    parts = [
        augment,
        f"AdamW with {t.warmup_epochs:g} warm-up epochs and a cosine decay",
        f"label smoothing {t.label_smoothing:g}" if t.label_smoothing else "",
        f"stochastic depth up to {m.drop_path_rate:g}" if m.drop_path_rate else "",
        "an exponential moving average (EMA) of the weights" if t.ema_decay else "",
        "`torch.compile`" if t.compile else "",
        "bfloat16 matrix products (autocast)" if t.amp else "float32 arithmetic",
    ]
    text = (
        "The recipe (Table 1, the `laptop` preset: a preset is a named set of settings) is this project's most accurate "
        "one, that of its `strong` preset, sized so that its training "
        "fits the hour: " + ", ".join(p for p in parts if p) + "."
    )
    if t.save_float16:
        text += " The final weights are stored as float16, to keep the committed file small, and tested so."
    if m.test_shifts:
        text += (
            f" The model predicts from each digit and four copies of it shifted by {m.test_shifts} pixel"
            f"{'s' if m.test_shifts > 1 else ''}, averaging the class probabilities (Section 2.1 shows the "
            "validation split choosing this)."
        )
    return Markdown(text)


def laptop_abstract(results: dict, final: dict, config: ExperimentConfig, held_out: int) -> Markdown:
    n = results["numbers"]
    p = config.model.patch_size
    acc, lo, hi = (
        n[k]["value"] for k in ("final.test_accuracy", "final.test_accuracy.ci_low", "final.test_accuracy.ci_high")
    )
    shifted = "final.test_accuracy_single_view" in n
    chosen_so = shifted and n.get("laptop.test_shifts", {}).get("value") == config.model.test_shifts
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
    text += (
        f". The recipe, *{n['laptop.chosen']['value']}*, was chosen on {held_out:,} training images held out for "
        + ("validation, and so was the prediction from shifted copies. " if chosen_so else "validation. ")
    )
    seen = sum(k.startswith("seen.") for k in n)
    if seen:
        text += (
            "No test number ranked the recipes or set the prediction, but test scores seen along the way decided "
            f"that the search went on: Table 5 lists the {number_word(seen).lower()} seen before the final one, in "
            "order, and what each led to. " + headline_caveat(results)
        )
    else:
        text += "No test number chose anything (the per-epoch test curve included)."
    return Markdown(text)


def seen_conclusion(results: dict, table: int) -> Markdown:
    """Under the timeline of test scores seen: what it means for the headline."""
    return Markdown(f"What Table {table} means for the headline. " + headline_caveat(results, steps=None))


def headline_caveat(results: dict, steps: str | None = "Section 4") -> str:
    """What watching the test set means for the headline: whether the scores seen and the final one
    lie inside each other's 95% intervals, and that stopping on a good score favours a lucky one."""
    n = results["numbers"]
    final, n_test = n["final.test_accuracy"]["value"], n["final.n_test"]["value"]
    scores = [v["value"] for k, v in n.items() if k.startswith("seen.test_accuracy[")] + [final]
    intervals = [wilson_interval(round(a * n_test), n_test) for a in scores]
    inside = all(lo <= b <= hi for lo, hi in intervals for b in scores)
    return (
        f"The test scores seen and the final one, {min(scores):.2%} to {max(scores):.2%}, "
        + (
            "all lie inside each other's 95% intervals: the test set cannot tell these models apart. "
            if inside
            else "do not all lie inside each other's 95% intervals. "
        )
        + "The search stopped at the first test score judged good enough"
        + (f" ({steps} gives each step)" if steps else "")
        + f", so the headline {final:.2%} is the best of "
        f"{len(scores)} looks at the test set and likely optimistic: the mean of the {len(scores)} scores, "
        f"{sum(scores) / len(scores):.2%}, is a fairer guess of what a fresh test set would give."
    )
