import pandas as pd
import pytest

from vitlib.report import ablation_conclusion, grid_effects_text, main_effects
from vitlib.selection import SelectionResult
from vitlib.tables import Table


def test_grid_effects_average_over_the_rest_of_the_grid():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.30, 0.20, 0.10, 0.40],
            "val_error_std": [0.01] * 4,
            "failed_folds": [0, 0, 0, 0],
        }
    )
    result = SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])
    table = main_effects(result)
    assert table.loc[(table.setting == "lr") & (table.value == "0.1"), "mean"].item() == pytest.approx(0.25)
    assert table.loc[(table.setting == "depth") & (table.value == "2"), "mean"].item() == pytest.approx(0.30)
    text = grid_effects_text(result).data
    assert "**lr**: the same on average for all its values (25.00%)" in text  # a tie is not ranked
    assert (
        "**depth**: best on average at 1 (20.00%), worst at 2 (30.00%), a spread of 10.00 points, more than fold noise"
        in text
    )
    assert "So depth moves the average by more than fold noise" in text
    assert "unstable" not in text  # no configuration's folds disagree wildly


def test_grid_effects_name_the_unstable_configurations():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.30, 0.20, 0.10, 0.40],
            "val_error_std": [0.01, 0.01, 0.01, 0.20],
            "failed_folds": [0, 0, 0, 0],
        }
    )
    text = grid_effects_text(SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])).data
    assert (
        "include 1 configuration whose folds disagree by more than three times that (unstable training: "
        "lr=0.01, depth=2)" in text
    )
    assert (
        "a spread of 10.00 points, more than fold noise, but 0.00 points without the unstable "
        "configurations named below, within fold noise" in text
    )  # depth's verdict hangs on lr=0.01, depth=2


def test_a_verdict_that_rests_on_unstable_configurations_says_so():
    summary = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 0.01, 0.01],
            "depth": [1, 2, 1, 2],
            "val_error_mean": [0.20, 0.22, 0.21, 0.60],
            "val_error_std": [0.01, 0.01, 0.01, 0.30],
            "failed_folds": [0, 0, 0, 0],
        }
    )
    text = grid_effects_text(SelectionResult(pd.DataFrame(), summary, {"lr": 0.1, "depth": 1}, ["lr", "depth"])).data
    assert (
        "**lr**: best on average at 0.1 (21.00%), worst at 0.01 (40.50%), a spread of 19.50 points, more than "
        "fold noise, but 0.00 points without the unstable configurations named below, within fold noise"
    ) in text
    assert (
        "**depth**: best on average at 1 (20.50%), worst at 2 (41.00%), a spread of 20.50 points, more than "
        "fold noise." in text
    )


def test_table_escapes_latex_and_keeps_html_readable():
    t = Table(pd.DataFrame({"a_b": [0.5], "note": ["50% & more"]}), "Cap_tion", formats={"a_b": "{:.0%}"})
    latex = t._repr_latex_()
    assert r"50\%" in latex and r"\&" in latex and r"a\_b" in latex and r"Cap\_tion" in latex
    assert "<td>50%</td>" in t._repr_html_() and "&amp;" in t._repr_html_()


def _runs(*accuracies, parameters=1530):
    return [{"test_accuracy": a, "parameters": parameters} for a in accuracies]


def test_ablation_prose_is_computed_and_names_the_least_stable_row():
    results = {
        "with the bug": _runs(0.70, 0.75, 0.80),
        "fixed": _runs(0.89, 0.90, 0.91),
        "modern": _runs(0.91, 0.92, 0.91, parameters=2450),
    }
    text = ablation_conclusion(results, 0.73, table=7).data
    assert "75.00% ± 5.00% over 3 seeds (the course report claimed 73%)" in text
    assert "90.00% ± 1.00% (+15.00 points)" in text and "more than twice the seed spread" in text
    assert "widest spread over seeds is that of *with the bug*, a standard deviation of 5.00%" in text
    assert "(2,450 parameters against 1,530)" in text
    steady = {"with the bug": _runs(0.70, 0.70, 0.70), "fixed": _runs(0.80, 0.90, 0.85), "modern": _runs(0.9, 0.9, 0.9)}
    assert "widest spread over seeds is that of *fixed*" in ablation_conclusion(steady, 0.73, table=7).data
