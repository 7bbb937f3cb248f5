import pandas as pd
import pytest

from vitlib.report import grid_effects, grid_effects_text
from vitlib.tables import Table
from vitlib.selection import SelectionResult


def test_grid_effects_average_over_the_rest_of_the_grid():
    summary = pd.DataFrame({"lr": [0.1, 0.1, 0.01, 0.01], "depth": [1, 2, 1, 2],
                            "val_error_mean": [0.30, 0.20, 0.10, 0.40], "val_error_std": [0.01] * 4,
                            "failed_folds": [0, 0, 0, 0]})
    result = SelectionResult(pd.DataFrame(), summary, {"lr": 0.01, "depth": 1}, ["lr", "depth"])
    table = grid_effects(result).df
    assert table.loc[(table.setting == "lr") & (table.value == "0.1"), "mean val error"].item() == pytest.approx(0.25)
    assert table.loc[(table.setting == "depth") & (table.value == "2"), "mean val error"].item() == pytest.approx(0.30)
    text = grid_effects_text(result).data
    assert "**lr**: the same on average for all its values (0.2500)" in text  # a tie is not ranked
    assert "**depth**: best on average at 1 (0.2000), worst at 2 (0.3000), a spread of 0.1000" in text


def test_table_escapes_latex_and_keeps_html_readable():
    t = Table(pd.DataFrame({"a_b": [0.5], "note": ["50% & more"]}), "Cap_tion", formats={"a_b": "{:.0%}"})
    latex = t._repr_latex_()
    assert r"50\%" in latex and r"\&" in latex and r"a\_b" in latex and r"Cap\_tion" in latex
    assert "<td>50%</td>" in t._repr_html_() and "&amp;" in t._repr_html_()
