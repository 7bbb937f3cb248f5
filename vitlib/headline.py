"""The report's opening and closing, from `results.json` (see `findings`): the abstract and
headline table that open it, and the discussion and "how this run was made" that close it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from IPython.display import Markdown

from .config import build_config
from .findings import validation_errors
from .selection_report import NOISE_FACTOR
from .tables import Table


def _v(results: dict, name: str):
    return results["numbers"][name]["value"]


def _has(results: dict, name: str) -> bool:
    return name in results["numbers"]


def headline_rows(results: dict) -> list[tuple[str, str, str]]:
    """(what, test accuracy, note) for the headline table and the README."""
    n = results["numbers"]

    def pm(prefix):
        return f"{_v(results, prefix + '.mean'):.2%} ± {_v(results, prefix + '.std'):.2%}"

    def seeds(preset):
        return sum(1 for k in n if k.startswith(f"ablation.{preset}.seed"))

    rows = [
        (
            "course report's claim (its final model, 5 epochs)",
            f"{_v(results, 'course_report.test_accuracy'):.0%}",
            "as printed in the course report",
        ),
        (
            "its model and protocol as written (double softmax), rerun here",
            pm("ablation.original"),
            f"mean ± std over {seeds('original')} seeds",
        ),
        ("the same without the double softmax", pm("ablation.seed"), f"mean ± std over {seeds('seed')} seeds"),
        (
            "model selection picks " + _v(results, "selection.best"),
            f"validation error {_v(results, 'selection.best.val_error'):.2%}",
            f"± {n['selection.best.val_error']['spread']:.2%} over folds",
        ),
        (
            "that configuration, final model (seed 0 of the seeds below)",
            f"{_v(results, 'final.test_accuracy'):.2%}",
            f"95% interval {_v(results, 'final.test_accuracy.ci_low'):.2%} – {_v(results, 'final.test_accuracy.ci_high'):.2%}",
        ),
        (
            "the same configuration over seeds",
            f"{_v(results, 'seeds.test_accuracy.mean'):.2%} ± {_v(results, 'seeds.test_accuracy.std'):.2%}",
            f"mean ± std over {sum(1 for k in n if k.startswith('seeds.test_accuracy['))} seeds",
        ),
        (
            f"still tiny ({_v(results, 'ablation.modern.parameters'):,} parameters against "
            f"{_v(results, 'ablation.seed.parameters'):,}), modern recipe",
            pm("ablation.modern"),
            f"mean ± std over {seeds('modern')} seeds",
        ),
    ]
    for key in sorted(k for k in n if k.startswith("checkpoint.") and k.endswith(".test_accuracy")):
        rows.append((n[key]["label"], f"{n[key]['value']:.2%}", "committed checkpoint, `vitlib evaluate`"))
    return rows


def headline_table(results: dict, number: int) -> Table:
    df = pd.DataFrame(headline_rows(results), columns=["", "result", "note"])
    return Table(
        df,
        f"Table {number}. Headline results of this build (every number computed by it, but the first)",
        widths={"": "7.2cm", "note": "4.6cm"},
    )


def abstract(results: dict) -> Markdown:
    n = results["numbers"]
    claim, bug, fixed = (
        _v(results, k) for k in ("course_report.test_accuracy", "ablation.original.mean", "ablation.seed.mean")
    )
    seeds_mean, seeds_std = _v(results, "seeds.test_accuracy.mean"), _v(results, "seeds.test_accuracy.std")
    modern = _v(results, "ablation.modern.mean")
    epochs_note = f"{n['final.n_train']['value']:,} training and {n['final.n_test']['value']:,} test images"
    return Markdown(
        f"**Abstract.** A course report trained a tiny Vision Transformer (4×4 patches, embedding width 8, "
        f"2 heads) on MNIST, chose its depth and MLP width by 3-fold cross-validation and reported "
        f"{claim:.0%} test accuracy after about 14 hours of GPU time. We rerun its model and protocol exactly, "
        f"on {epochs_note}. As written, with a softmax applied twice, it reaches {bug:.2%} here; without the "
        f"double softmax the same model reaches {fixed:.2%}. Model selection picks {_v(results, 'selection.best')}, "
        f"which scores {_v(results, 'final.test_accuracy'):.2%} on the test set "
        f"({seeds_mean:.2%} ± {seeds_std:.2%} over seeds); a modern training recipe "
        f"on a model still tiny ({n['ablation.modern.parameters']['value']:,} parameters against "
        f"{n['ablation.seed.parameters']['value']:,}) reaches {modern:.2%} ± {_v(results, 'ablation.modern.std'):.2%}. "
        f"Every number in this report is computed when it is built; `make check-report` rebuilds it and "
        f"compares every number with the committed `results.json`."
    )


def _seed_values(results: dict, prefix: str) -> list[float]:
    return [v["value"] for k, v in results["numbers"].items() if k.startswith(prefix)]


def _lead(results: dict, selection: str) -> tuple[float, float]:
    """A selection's pick: (its lead in mean validation error over the next configuration, the
    fold-noise limit, NOISE_FACTOR x the median fold standard deviation of its configurations)."""
    found = validation_errors(results["numbers"], selection).values()
    errors = sorted(e for e, _ in found)
    return errors[1] - errors[0], NOISE_FACTOR * float(np.median([s for _, s in found]))


def runner_up_verdict(results: dict) -> str:
    """Whether the selected configuration beats the runner-up, judged over its seeds."""
    seeds = _seed_values(results, "seeds.test_accuracy[")
    other = _v(results, "runner_up.test_accuracy")
    below = sum(a < other for a in seeds)
    if below:
        return (
            f"the runner-up of selection scores {other:.2%}, and {below} of the selected configuration's "
            f"{len(seeds)} seeds score below it: over seeds the two are not told apart"
        )
    return f"the runner-up of selection scores {other:.2%}, below all {len(seeds)} seeds of the selected configuration"


def answers(results: dict, laptop: dict | None) -> Markdown:
    """The questions a reader of the course report brings, answered from this build's numbers (and
    the laptop report's, `laptop`, where it is committed)."""
    n = results["numbers"]
    course = _v(results, "course_report.choice")
    lines = ["**Answers.**", ""]
    variants = sorted({k[: k.index("].")] + "]" for k in n if k.startswith("selection_variant[")})
    picks = [(k[len("selection_variant[") : -1], _v(results, f"{k}.best")) for k in variants]
    fixed = _v(results, "selection.best")

    def agree(pick):
        return (
            "the course report's choice"
            if pick.replace(" ", "") == course.replace(" ", "")
            else "not the course report's choice"
        )

    leads = {k: _lead(results, k) for k in [*variants, "selection"]}

    def margin(selection: str) -> str:
        lead, limit = leads[selection]
        return f"{lead * 100:.2f} points ahead of the next, {'beyond' if lead > limit else 'within'} fold noise"

    said = "; ".join(
        f"{name}, it picks **{pick}** ({agree(pick)}; {margin(k)})" for (name, pick), k in zip(picks, variants)
    )
    firm = [k for k, (lead, limit) in leads.items() if lead > limit]
    lines.append(
        f"1. *Which depth and MLP width does the course report's protocol choose?* The course report chose "
        f"{course}. Rerun here{' ' + said + '; w' if said else ', w'}ith the double softmax removed, it picks "
        f"**{fixed}** ({agree(fixed)}; {margin('selection')})."
        + (
            ""
            if firm
            else f" {'Neither lead' if len(leads) == 2 else 'No lead'} exceeds fold noise, so no pick is firm."
        )
        + " Section 3 gives every configuration's validation error and the rule for fold noise."
    )
    bugs, fixes = _seed_values(results, "ablation.original.seed"), _seed_values(results, "ablation.seed.seed")
    claim = _v(results, "course_report.test_accuracy")
    inside = min(bugs) <= claim <= max(bugs)
    lines.append(
        f"2. *Why only {claim:.0%}?* The softmax applied twice. With it, the course report's model and protocol "
        f"reach {_v(results, 'ablation.original.mean'):.2%} ± {_v(results, 'ablation.original.std'):.2%} over "
        f"{len(bugs)} seeds, anywhere from {min(bugs):.2%} to {max(bugs):.2%}: training is erratic, and the course "
        f"report's {claim:.0%} is "
        + (
            "an ordinary draw from that range."
            if inside
            else f"{'below' if claim < min(bugs) else 'above'} every seed here."
        )
        + f" Without it the same model reaches {_v(results, 'ablation.seed.mean'):.2%} ± "
        f"{_v(results, 'ablation.seed.std'):.2%} over {len(fixes)} seeds (Section 5, Figure 7)."
    )
    epochs = _v(results, "final.epochs")
    better = (
        f"3. *What does better?* Without the double softmax, the configuration selected here reaches "
        f"{_v(results, 'seeds.test_accuracy.mean'):.2%} ± {_v(results, 'seeds.test_accuracy.std'):.2%} over seeds "
        f"(Section 4) and the course report's own choice {_v(results, 'ablation.seed.mean'):.2%} ± "
        f"{_v(results, 'ablation.seed.std'):.2%} (Table 7): "
        + (
            "within each other's seed spread, so the two choices are not told apart."
            if abs(_v(results, "seeds.test_accuracy.mean") - _v(results, "ablation.seed.mean"))
            < max(_v(results, "seeds.test_accuracy.std"), _v(results, "ablation.seed.std"))
            else "apart by more than either's seed spread."
        )
        + f" A modern training recipe, still tiny ({_v(results, 'ablation.modern.parameters'):,} parameters against "
        f"{_v(results, 'ablation.seed.parameters'):,}), reaches {_v(results, 'ablation.modern.mean'):.2%} ± "
        f"{_v(results, 'ablation.modern.std'):.2%}. All of these train for only {epochs} epoch{'' if epochs == 1 else 's'}."
    )
    if laptop is not None:
        m, built = laptop["numbers"], laptop.get("built", {})
        seconds = built.get("wall_seconds", {}).get("final_train_seconds")
        cores = built.get("machine", {}).get("cores")
        trained = f" trained in {seconds / 60:.0f} minutes on {cores} CPU cores" if seconds and cores else ""
        # A relative link: the committed reports sit side by side under report/.
        better += (
            f" A larger ViT ({m['final.parameters']['value']:,} parameters){trained} "
            f"reaches **{m['final.test_accuracy']['value']:.2%}** (the laptop report, "
            f"[`report/laptop/report.pdf`](../laptop/report.pdf), "
            f"which explains why that figure is likely a little optimistic)."
        )
    lines.append(better)
    return Markdown("\n".join(lines))


def discussion(results: dict) -> Markdown:
    n = results["numbers"]
    bug, fixed, modern = (_v(results, f"ablation.{p}.mean") for p in ("original", "seed", "modern"))
    sds = {p: _v(results, f"ablation.{p}.std") for p in ("original", "seed", "modern")}
    counts = {p: len(_seed_values(results, f"ablation.{p}.seed")) for p in ("original", "seed", "modern")}
    parts = [
        f"**What was wrong.** The double softmax costs {(fixed - bug) * 100:.2f} points of test accuracy on "
        f"average ({bug:.2%} over {counts['original']} seeds against {fixed:.2%} over {counts['seed']}), and makes "
        f"training erratic: a standard deviation over seeds of {sds['original']:.2%} against {sds['seed']:.2%}. "
        f"The course report's 73% is what this bug gives, not a limit of the model.",
        f"**What the size allows.** With {n['ablation.modern.parameters']['value']:,} parameters (the original "
        f"has {n['ablation.seed.parameters']['value']:,}: a standard attention block adds an output projection), "
        f"input normalisation and AdamW with warm-up and cosine decay reach "
        f"{modern:.2%}: {(modern - fixed) * 100:+.2f} points over the fixed original recipe"
        + (", within the seed spread of either." if abs(modern - fixed) < max(sds["modern"], sds["seed"]) else "."),
        f"**What model selection can tell apart.** The chosen configuration ({_v(results, 'selection.best')}) "
        f"scores {_v(results, 'seeds.test_accuracy.mean'):.2%} ± {_v(results, 'seeds.test_accuracy.std'):.2%} "
        f"over seeds" + (f"; {runner_up_verdict(results)}." if _has(results, "runner_up.test_accuracy") else "."),
        f"**Limits.** {_v(results, 'final.epochs')} epoch{'' if _v(results, 'final.epochs') == 1 else 's'} "
        "are far from convergence for these models (the laptop report trains a larger "
        "one for much longer); three seeds of the fixed recipes give a rough spread; numbers come from one CPU, "
        "and another CPU moves them by float rounding (`make check-report` measures by how much).",
    ]
    return Markdown("\n\n".join(parts))


def rebuild_note(profile: str, tables: str = "Tables 8 and 9") -> Markdown:
    return Markdown(
        f"This report is the `{profile}` profile's: a profile is a named study, its settings in "
        f"`params/{profile}.yaml`. {tables} give the settings and the machine. `make report PROFILE={profile}` rebuilds "
        f"this report; `make check-report PROFILE={profile}` rebuilds it in a temporary folder and "
        f"compares every number with the committed `results.json`."
    )


SELECTION_SETTINGS = ("folds", "shuffle_folds", "grid")


def settings_table(study, number: int, selection: bool = True) -> Table:
    """What was run: the profile, its preset, the main settings and every one that differs from the
    preset, each with where its value came from (the preset, the profile file or the notebook).
    `selection=False` for a study without k-fold model selection (the laptop study)."""
    preset_cfg = build_config(study.preset)
    ours, base = study.config.flat(), preset_cfg.flat()
    sources = getattr(study, "sources", {})
    rows = [("profile", study.profile, "notebook"), ("preset", study.preset, sources.get("preset", "notebook"))]
    shown = [
        "patch_size",
        "embed_dim",
        "num_heads",
        "depth",
        "mlp_hidden_dim",
        "head_softmax",
        "optimizer",
        "lr",
        "batch_size",
        "epochs",
        "lr_schedule",
        "folds",
        "shuffle_folds",
        "grid",
        "seed",
        "train_limit",
        "test_limit",
    ]
    if not selection:
        shown = [k for k in shown if k not in SELECTION_SETTINGS]
    for key in shown + [
        k for k in ours if k not in shown and (ours[k] != base[k] or k in sources) and k != "data_root"
    ]:
        rows.append((key, _short(ours[key]), sources.get(key, f"preset {study.preset}")))
    caption = (
        "Settings of this run: the base configuration, from which model selection varies the settings of its "
        "grid (the final model takes the chosen values)"
        if selection
        else "Settings of this run: the final model's recipe (the candidates and the ingredient runs differ "
        "from it as Tables 2 and 3 say)"
    )
    return Table(
        pd.DataFrame(rows, columns=["setting", "value", "from"]),
        f"Table {number}. {caption}",
        widths={"value": "7.5cm"},
    )


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def environment_table(results: dict, number: int) -> Table:
    built = results["built"]
    m = built["machine"]
    rows = [
        ("git commit", built["commit"] or "unknown"),
        ("built", built["date"]),
        ("CPU", f"{m['cpu']} ({m['cores']} cores, {m['arch']})"),
        ("Python", m["python"]),
    ]
    rows += [(lib, m[lib]) for lib in m if lib not in ("cpu", "cpu_flags", "cores", "arch", "python")]
    env = built.get("environment", {})
    rows += [(lib, value) for lib, value in env.items() if lib != "lock"]
    if "lock" in env:
        rows.append(("environment", env["lock"]))
    names = {
        "selection_seconds": "model selection",
        "final_seconds": "final model",
        "seeds_seconds": "more seeds and the runner-up",
        "ablation_seconds": "reproduction and ablation",
        "candidates_seconds": "the candidates (the last build that trained any)",
        "ingredients_seconds": "the ingredient runs (the last build that trained any)",
        "final_train_seconds": "training the final model",
    }
    for key, label in names.items():
        if key in built["wall_seconds"]:
            seconds = built["wall_seconds"][key]
            rows.append(
                (f"wall time: {label}", f"{seconds:,.0f} s" if seconds >= 1 else "read back from an earlier build")
            )
    return Table(
        pd.DataFrame(rows, columns=["", "value"]), f"Table {number}. Where and with what this report was built"
    )
