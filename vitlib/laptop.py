"""The laptop report's numbers: every number notebook 05 states, gathered from the `laptop`
profile's study (params/laptop.yaml declares its stages: candidates, ingredients) into
results.json, as `vitlib.findings` does for the course-report profiles.

Beside the study's results, a profile may commit report/<profile>/test_scores_seen.csv: the test
scores that were seen before the final choice, in order, each with the candidate of the validation
split it came from (if any), what led to it and what was decided after it. The report shows them as
a timeline; results.json keeps them, unchecked, as constants.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import findings, stages
from .build import RECORDS
from .findings import built, number
from .paths import reference_dir
from .report import runner_up
from .stats import mcnemar, wilson_interval
from .study import Study

SEEN = RECORDS[0]  # read from report/<profile>/ only
SEEN_COLUMNS = ["model", "candidate", "trigger", "test_accuracy", "n_test", "decision"]


def test_scores_seen(study: Study, path: Path | None = None) -> pd.DataFrame:
    """The test scores seen before the final choice: a committed record in report/<profile>/, read
    from there by every build of the profile, a from-scratch rebuild too (none for a study of
    other settings)."""
    path = path or reference_dir(study.profile) / SEEN
    if not study.is_profiles_own or not path.is_file():
        return pd.DataFrame(columns=SEEN_COLUMNS)
    table = pd.read_csv(path, keep_default_na=False)
    if list(table.columns) != SEEN_COLUMNS or table["model"].duplicated().any():
        raise ValueError(f"{path} must have the columns {', '.join(SEEN_COLUMNS)}, one row per model")
    return table


def gather(study: Study) -> dict:
    """Every number the laptop report states, for results.json."""
    candidates = study.compare("candidates")
    chosen = stages.chosen(candidates)
    numbers = {"laptop.chosen": number(chosen, kind="text", label="the recipe the validation split chose")}
    for name, m in candidates.items():
        numbers[f"candidate.val_error[{name}]"] = number(m["test_error"], label=f"{name}: validation error")
        numbers[f"candidate.parameters[{name}]"] = number(m["parameters"], kind="count", label=f"{name}: parameters")
    versus = mcnemar(candidates[chosen]["test_correct"], candidates[runner_up(candidates, chosen)]["test_correct"])
    numbers["candidate.runner_up_mcnemar_p"] = number(
        versus["p_value"], kind="p", label="McNemar p on the validation split, chosen recipe vs runner-up"
    )
    views = study.views("candidates")
    for name, v in views.items():
        numbers[f"candidate.val_error_shifted[{name}]"] = number(
            v["error"], label=f"{name}: validation error with shifted copies"
        )
    numbers["laptop.test_shifts"] = number(
        stages.chosen_test_shifts(study.stages["candidates"], candidates, views),
        kind="count",
        label="shift of the copies the validation split chose (px; 0: none)",
    )
    for name, m in study.compare("ingredients").items():
        numbers[f"ingredient.val_error[{name}]"] = number(m["test_error"], label=f"{name}: validation error")
    final = study.final()
    n = final["n_test"]
    lo, hi = wilson_interval(round(final["test_accuracy"] * n), n)
    spread = (hi - lo) / 2  # one seed: the test set's own uncertainty is the spread the report states
    numbers.update(
        {
            "final.test_accuracy": number(final["test_accuracy"], spread, label="the laptop model's test accuracy"),
            "final.test_accuracy.ci_low": number(lo, spread, label="its 95% Wilson interval, low end"),
            "final.test_accuracy.ci_high": number(hi, spread, label="its 95% Wilson interval, high end"),
            "final.parameters": number(final["parameters"], kind="count", label="the laptop model's parameters"),
            "final.n_train": number(final["n_train"], kind="count", label="training images"),
            "final.n_test": number(n, kind="count", label="test images"),
        }
    )
    if "test_accuracy_single_view" in final:
        numbers["final.test_accuracy_single_view"] = number(
            final["test_accuracy_single_view"], spread, label="its test accuracy reading each digit alone"
        )
    for row in test_scores_seen(study).itertuples():
        numbers[f"seen.test_accuracy[{row.model}]"] = number(
            row.test_accuracy, kind="constant", label=f"{row.model}: test accuracy seen before the final choice"
        )
    timing = {**study.timing(), "final_train_seconds": final["train_seconds"]}
    return {"profile": study.profile, "numbers": numbers, "built": built(timing, final_run=final["run"])}


def write_findings(study: Study) -> dict:
    return findings.write_findings(study, gather)
