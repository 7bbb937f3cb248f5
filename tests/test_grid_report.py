"""The grid report (notebook 06) and the figures every report shares: one rule for "beyond fold
noise", an interaction measured as a departure from additivity, and text that prints at 8 pt or
more."""

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from vitlib import grid_report, plots
from vitlib.selection import SelectionResult

matplotlib.use("Agg")


def _grid(noise: float = 0.01, shaky: bool = False) -> SelectionResult:
    """lr x depth x mlp: depth 3 wants lr 0.01, depth 1 wants lr 0.001 (an interaction); mlp does
    nothing. Every configuration's folds differ by `noise`."""
    rows = []
    for lr, depth, mlp in itertools.product([0.001, 0.01], [1, 3], [16, 32]):
        error = {(0.001, 1): 0.30, (0.01, 1): 0.40, (0.001, 3): 0.40, (0.01, 3): 0.10}[(lr, depth)]
        std = 0.2 if shaky and (lr, depth, mlp) == (0.01, 1, 32) else noise
        rows.append(
            {
                "lr": lr,
                "depth": depth,
                "mlp_hidden_dim": mlp,
                "val_error_mean": error,
                "val_error_std": std,
                "train_error_mean": error,
                "train_error_std": std,
                "folds": 3,
                "failed_folds": 0,
            }
        )
    summary = pd.DataFrame(rows)
    keys = ["lr", "depth", "mlp_hidden_dim"]
    trials = pd.DataFrame(
        [
            {
                **{k: r[k] for k in keys},
                "fold": f,
                "val_error": r["val_error_mean"] + d,
                "train_error": r["train_error_mean"],
            }
            for r in rows
            for f, d in enumerate((-r["val_error_std"], 0.0, r["val_error_std"]), start=1)
        ]
    )
    return SelectionResult(trials, summary, {"lr": 0.01, "depth": 3, "mlp_hidden_dim": 16}, keys)


def test_main_effects_and_their_verdicts_follow_one_rule():
    selection = _grid()
    effects = grid_report.effects(selection).set_index("setting")
    assert effects.loc["lr", "spread"] == pytest.approx(0.10)  # (0.35 vs 0.25)
    assert effects.loc["depth", "spread"] == pytest.approx(0.10)
    assert effects.loc["mlp_hidden_dim", "spread"] == pytest.approx(0.0)
    table = grid_report.effects_table(selection, number=3).df.set_index("setting")
    assert (
        table.loc["lr", "verdict"] == "beyond fold noise"
        and table.loc["mlp_hidden_dim", "verdict"] == "within fold noise"
    )
    assert "2 × 1.000 = 2.00 points" in grid_report.effects_table(selection, number=3).caption
    quiet = _grid(noise=0.06)  # a fold noise of 6 points: 10 points is not beyond 2 x 6
    assert set(grid_report.effects_table(quiet, number=3).df["verdict"]) == {"within fold noise"}


def test_the_interaction_is_the_departure_from_additive_effects():
    selection = _grid()
    rows, cols, panels = grid_report.heatmap_keys(selection)
    assert {rows, cols} == {"lr", "depth"} and panels == ["mlp_hidden_dim"]
    # cell means 0.30 0.40 / 0.40 0.10: row and column means 0.35, 0.25; grand 0.30 -> residual 0.10
    assert grid_report.interaction(selection, "lr", "depth") == pytest.approx(0.10)
    text = grid_report.effects_text(selection, table=3, interaction_table_number=4).data
    assert "the best lr for each depth is 0.001 at depth=1, 0.01 at depth=3" in text
    assert "10.0 points, beyond fold noise: they interact" in text
    shaky = grid_report.effects_text(_grid(shaky=True), table=3, interaction_table_number=4).data
    assert "1 configuration trained erratically" in shaky and "lr = 0.01, depth = 1, mlp_hidden_dim = 32" in shaky


def test_a_grid_of_one_setting_is_refused_with_the_fix():
    selection = _grid()
    one = SelectionResult(selection.trials, selection.summary, selection.best, ["lr"])
    with pytest.raises(ValueError, match="at least two settings"):
        grid_report.heatmap_keys(one)


def test_the_numbers_of_the_grid_report_compare_with_the_seed_reports_only_on_the_same_images():
    ours = {"numbers": {"final.n_train": {"value": 60000}, "final.n_test": {"value": 10000}}}
    seed = {"numbers": {"final.n_train": {"value": 60000}, "final.n_test": {"value": 10000}}}
    assert grid_report.comparable(ours, seed) is seed
    quick = {"numbers": {"final.n_train": {"value": 1200}, "final.n_test": {"value": 400}}}
    assert grid_report.comparable(quick, seed) is None and grid_report.comparable(ours, None) is None


def _smallest_print_size(fig) -> float:
    """The smallest text as the PDF prints it: the figure saved as the notebook saves it (cropped
    to what it draws), then shrunk to fit the page's figure box."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    width, height = (pixels / 100 for pixels in Image.open(buffer).size)
    scale = min(1.0, plots.PRINT_WIDTH_IN / width, plots.PRINT_HEIGHT_IN / height)
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    return min(sizes) * scale


def test_every_figure_prints_its_text_at_8_pt_or_more():
    selection = _grid()
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_error": 0.1 / e, "eval_loss": 1 / e, "eval_error": 0.1 / e}
        for e in range(1, 6)
    ]
    figures = [
        plots.grid_heatmaps(selection.summary, "lr", "depth", ["mlp_hidden_dim"], selection.best),
        plots.learning_curves(history, cut=True),
        plots.per_class_accuracy(torch.linspace(0.9, 0.99, 10)),
        plots.seed_spread({"a": [0.7, 0.8, 0.75], "b": [0.9, 0.91]}, 0.73),
        plots.model_selection(
            selection.trials.assign(**selection.summary.iloc[0].to_dict()),
            selection.summary,
            selection.grid_keys,
            selection.best,
            3,
            5,
        ),
        plots.model_selection(  # the seed report's shape: 4 configurations, labels slanted
            selection.trials[selection.trials["lr"] == 0.01].drop(columns="lr"),
            selection.summary[selection.summary["lr"] == 0.01].drop(columns="lr").reset_index(drop=True),
            ["depth", "mlp_hidden_dim"],
            {"depth": 3, "mlp_hidden_dim": 16},
            3,
            5,
        ),
        plots.confusion_matrix(torch.arange(1000) % 10, (torch.arange(1000) * 7) % 10),
        plots.position_similarity(torch.rand(49, 49) * 2 - 1, "learned"),
        plots.validation_curves({name: {"history": history} for name in ("a recipe", "another recipe")}),
        plots.digit_grid(torch.zeros(12, 1, 28, 28, dtype=torch.uint8), [f"{i} → {i} (0.99)" for i in range(12)]),
    ]
    for fig in figures:
        assert _smallest_print_size(fig) >= plots.MIN_PRINT_PT - 1e-6
        matplotlib.pyplot.close(fig)


def test_bars_start_from_zero():
    fig = plots.per_class_accuracy(torch.tensor([0.99, 0.95, 0.98] + [0.97] * 7))
    assert fig.axes[0].get_ylim()[0] == 0
    errors = [p.get_height() for p in fig.axes[0].patches]
    assert np.allclose(errors, [1, 5, 2] + [3] * 7)
