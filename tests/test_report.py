import pandas as pd
import pytest

from vitlib.report import ablation_conclusion, grid_effects_text, main_effects
from vitlib.selection import SelectionResult
from vitlib.tables import Table


def test_grid_effects_average_over_the_rest_of_the_grid():
    summary = pd.DataFrame({"lr": [0.1, 0.1, 0.01, 0.01], "depth": [1, 2, 1, 2],
                            "val_error_mean": [0.30, 0.20, 0.10, 0.40], "val_error_std": [0.01] * 4,
                            "failed_folds": [0, 0, 0, 0]})
    result = SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])
    table = main_effects(result)
    assert table.loc[(table.setting == "lr") & (table.value == "0.1"), "mean"].item() == pytest.approx(0.25)
    assert table.loc[(table.setting == "depth") & (table.value == "2"), "mean"].item() == pytest.approx(0.30)
    text = grid_effects_text(result).data
    assert "**lr**: the same on average for all its values (25.00%)" in text  # a tie is not ranked
    assert "**depth**: best on average at 1 (20.00%), worst at 2 (30.00%), a spread of 10.00 points, beyond" in text
    assert "So depth matters beyond fold noise" in text


def test_table_escapes_latex_and_keeps_html_readable():
    t = Table(pd.DataFrame({"a_b": [0.5], "note": ["50% & more"]}), "Cap_tion", formats={"a_b": "{:.0%}"})
    latex = t._repr_latex_()
    assert r"50\%" in latex and r"\&" in latex and r"a\_b" in latex and r"Cap\_tion" in latex
    assert "<td>50%</td>" in t._repr_html_() and "&amp;" in t._repr_html_()


def _runs(*accuracies):
    return [{"test_accuracy": a} for a in accuracies]


def test_ablation_prose_is_computed_and_names_the_least_stable_row():
    results = {"with the bug": _runs(0.70, 0.75, 0.80), "fixed": _runs(0.89, 0.90, 0.91),
               "modern": _runs(0.91, 0.92, 0.91)}
    text = ablation_conclusion(results, 0.73, table=7).data
    assert "75.00% ± 5.00% over 3 seeds (the course report claimed 73%)" in text
    assert "90.00% ± 1.00% (+15.00 points)" in text and "more than twice the seed spread" in text
    assert "least stable row is *with the bug*" in text
    steady = {"with the bug": _runs(0.70, 0.70, 0.70), "fixed": _runs(0.80, 0.90, 0.85), "modern": _runs(0.9, 0.9, 0.9)}
    assert "least stable row is *fixed*" in ablation_conclusion(steady, 0.73, table=7).data
