"""Every number a report states, in one file per build: `build/<profile>/results.json` (committed as
`report/<profile>/results.json` when a build is promoted to the reference).

`gather` collects them from a study's saved results and `save` writes the file (notebook 04 does
both, last); `load` reads it (the report's headline, the README test, `vitlib.rebuild`). Each
number has a value, the spread the report states for it (seeds or folds), a kind and a label; its
name says what it is (`.mean`, `.std`, `.ci_low`, `.effect[...]`), which `vitlib.compare` reads to
judge how far another CPU may move it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .files import readable_file
from .paths import reference_dir
from .provenance import environment, git_commit, machine
from .results import write_json
from .stats import mcnemar, mean_std, t_interval, wilson_interval

# The course report's own results, the only numbers typed in: what its model selection chose, and
# the test accuracy it claimed for its final model.
COURSE_REPORT_CHOICE = {"depth": 3, "mlp_hidden_dim": 16}
COURSE_REPORT_ACCURACY = 0.73


def number(value, spread=None, kind="fraction", label=""):
    return {"value": value, "spread": spread, "kind": kind, "label": label}


def gather(study) -> dict:
    """All the numbers of a finished study (every stage has run), read from its saved results."""
    numbers = {
        "course_report.test_accuracy": number(
            COURSE_REPORT_ACCURACY, kind="constant", label="the course report's claim"
        ),
        "course_report.choice": number(
            _point(COURSE_REPORT_CHOICE), kind="constant", label="the configuration the course report chose"
        ),
        **selection_numbers(study.selection()),
        **final_numbers(study),
    }
    for name, variant in study.select_variants().items():
        numbers.update(selection_numbers(variant, f"selection_variant[{name}]", f", {name}"))
    if "ablation" in study.stages:
        numbers.update(ablation_numbers(study))
    return {"profile": study.profile, "numbers": numbers, "built": built(study.timing())}


def _point(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def point_key(text: str) -> tuple:
    """'depth=3, mlp_hidden_dim=16' -> (('depth', '3'), ('mlp_hidden_dim', '16')): `_point` read back."""
    return tuple(tuple(part.strip().split("=", 1)) for part in text.split(",") if "=" in part)


def validation_errors(numbers: dict, selection: str = "selection") -> dict:
    """{point: (mean validation error, its fold spread)} from `<selection>.val_error[k=v, ...]`."""
    found, start = {}, f"{selection}.val_error["
    for name, n in numbers.items():
        if name.startswith(start) and name.endswith("]"):
            found[point_key(name[len(start) : -1])] = (n["value"], n["spread"] or 0.0)
    return found


def selection_numbers(selection, prefix: str = "selection", said: str = "") -> dict:
    """Each configuration's validation error, the pick and its error; for the profile's own
    selection also the fold noise and each setting's main effect."""
    numbers = {}
    for row in selection.summary.to_dict("records"):
        point = _point({k: row[k] for k in selection.grid_keys})
        numbers[f"{prefix}.val_error[{point}]"] = number(
            row["val_error_mean"], row["val_error_std"], label=f"validation error, {point}{said}"
        )
    is_best = np.logical_and.reduce([selection.summary[k] == v for k, v in selection.best.items()] or [True])
    best = selection.summary[is_best].iloc[0]
    numbers[f"{prefix}.best"] = number(
        _point(selection.best), kind="text", label=f"the configuration model selection picks{said}"
    )
    numbers[f"{prefix}.best.val_error"] = number(
        float(best["val_error_mean"]),
        float(best["val_error_std"]),
        label=f"its validation error (mean ± std over folds){said}",
    )
    if prefix != "selection":
        return numbers
    ok, noise = selection.ok(), selection.fold_noise()
    numbers["selection.fold_noise"] = number(noise, kind="spread", label="median fold standard deviation")
    for key in selection.grid_keys:
        means = ok.groupby(key, sort=False)["val_error_mean"].mean()
        if len(means) > 1:
            numbers[f"selection.effect[{key}]"] = number(
                float(means.max() - means.min()),
                noise,
                label=f"main effect of {key}: spread of its mean validation error",
            )
            numbers[f"selection.effect[{key}].best"] = number(
                str(means.idxmin()), kind="text", label=f"{key}'s best value on average"
            )
    return numbers


def final_numbers(study) -> dict:
    """The final model, its seeds, and the runner-up of selection against it."""
    runs = study.seeds_and_runner_up()  # read back
    seeds = {name: m for name, m in runs.items() if name != "runner-up"}
    final = next(iter(seeds.values()))
    accs = [m["test_accuracy"] for m in seeds.values()]
    mean, std = mean_std(accs)
    lo, hi = wilson_interval(round(final["test_accuracy"] * final["n_test"]), final["n_test"])
    numbers = {
        "final.test_accuracy": number(final["test_accuracy"], std, label="final model's test accuracy"),
        "final.test_accuracy.ci_low": number(lo, std, label="its 95% Wilson interval, low end"),
        "final.test_accuracy.ci_high": number(hi, std, label="its 95% Wilson interval, high end"),
        "final.parameters": number(final["parameters"], kind="count", label="final model's parameters"),
        "final.n_test": number(final["n_test"], kind="count", label="test images"),
        "final.n_train": number(final["n_train"], kind="count", label="training images"),
        "final.epochs": number(len(final["history"]), kind="count", label="epochs of training"),
        "seeds.test_accuracy.mean": number(mean, std, label=f"test accuracy over {len(accs)} seeds, mean"),
        "seeds.test_accuracy.std": number(std, kind="spread", label="the same, standard deviation"),
    }
    for name, m in seeds.items():
        numbers[f"seeds.test_accuracy[{name.split(' (')[0]}]"] = number(m["test_accuracy"], std, label=name)
    if "runner-up" in runs:
        test = mcnemar(final["test_correct"], runs["runner-up"]["test_correct"])
        numbers["runner_up.test_accuracy"] = number(
            runs["runner-up"]["test_accuracy"], std, label="runner-up of selection, test accuracy"
        )
        numbers["runner_up.mcnemar_p"] = number(test["p_value"], kind="p", label="McNemar p, final vs runner-up")
    return numbers


def ablation_numbers(study) -> dict:
    """Each row of the ablation: mean, spread and interval over its seeds, and every seed."""
    numbers = {}
    ablation = study.stage("ablation")
    for row, per_seed in study.compare_by_run("ablation").items():
        preset = ablation.preset_of(row) or row  # results.json names each row by its preset
        accs = [m["test_accuracy"] for m in per_seed]
        mean, std = mean_std(accs)
        lo, hi = t_interval(accs)
        numbers.update(
            {
                f"ablation.{preset}.mean": number(mean, std, label=f"{row}: mean over {len(accs)} seeds"),
                f"ablation.{preset}.std": number(std, kind="spread", label=f"{row}: standard deviation"),
                f"ablation.{preset}.ci_low": number(lo, std, label=f"{row}: 95% t-interval, low end"),
                f"ablation.{preset}.ci_high": number(hi, std, label=f"{row}: 95% t-interval, high end"),
                f"ablation.{preset}.parameters": number(
                    per_seed[0]["parameters"], kind="count", label=f"{row}: parameters"
                ),
            }
        )
        for k, m in enumerate(per_seed):
            numbers[f"ablation.{preset}.seed{k}"] = number(m["test_accuracy"], std, label=f"{row}: seed run {k}")
    return numbers


def built(timing: dict, **extra) -> dict:
    """How and where a results file was made: commit, date, machine, environment, stage wall times."""
    return {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "environment": environment(),
        **extra,
        "wall_seconds": {k: round(v, 1) for k, v in timing.items() if k.endswith("_seconds")},
    }


def save(results: dict, path: Path) -> None:
    write_json(Path(path), results)


def write_findings(study, gather_numbers=None) -> dict:
    """Gather every number of the finished study into its results.json (the last stage), with
    `gather` or the report's own `gather_numbers`."""
    results = (gather_numbers or gather)(study)
    save(results, study.out / "results.json")
    return results


def load(path: Path) -> dict:
    path = readable_file(
        path,
        "results file",
        "build the report first (`make report`), or restore it with `git checkout -- " + str(path) + "`",
    )
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"results file {path} is not valid JSON ({err}). Fix: rebuild it (`make report`), or "
            f"restore it with `git checkout -- {path}`"
        ) from None
    if not (isinstance(results, dict) and {"numbers", "built"} <= set(results)):
        raise ValueError(
            f"results file {path} is not one that `make report` writes (no numbers or built). "
            f"Fix: rebuild it (`make report`), or restore it with `git checkout -- {path}`"
        )
    return results


def committed(profile: str) -> dict | None:
    """Another profile's committed results (report/<profile>/results.json), or None if it has none."""
    path = reference_dir(profile) / "results.json"
    return load(path) if path.is_file() else None
