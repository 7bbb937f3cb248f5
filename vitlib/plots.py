"""Figures for the report: model selection, learning curves, confusion matrix, digits.

Each function takes results (DataFrames, histories, tensors) and returns a matplotlib Figure;
none of them trains or evaluates anything.
"""

from __future__ import annotations

import functools
import textwrap
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.layout_engine import ConstrainedLayoutEngine
from sklearn.metrics import ConfusionMatrixDisplay

# The PDF shows a figure at most 0.9 of the text width and 0.8 of its height (vitlib.render), on
# nbconvert's letter page with 1-inch margins; no text may print smaller than MIN_PRINT_PT there.
PRINT_WIDTH_IN, PRINT_HEIGHT_IN, MIN_PRINT_PT = 0.9 * 6.5, 0.8 * 9.0, 8.0


def printed_scale(fig: plt.Figure) -> float:
    """How much the PDF shrinks `fig`: the notebook saves it cropped to what it draws (bbox_inches
    "tight", plus a pad), which labels outside the axes make larger than the figure itself."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    pad = 2 * plt.rcParams["savefig.pad_inches"]
    return min(1.0, PRINT_WIDTH_IN / (box.width + pad), PRINT_HEIGHT_IN / (box.height + pad))


def legible(plot):
    """Make a plot function's text at least MIN_PRINT_PT points once the figure is shrunk to the page.
    Larger text widens what the figure draws, so the scale is measured again until it holds."""

    @functools.wraps(plot)
    def drawn(*args, **kwargs):
        fig = plot(*args, **kwargs)
        for _ in range(4):
            smallest = MIN_PRINT_PT / printed_scale(fig)
            small = False
            for ax in fig.axes:  # tick labels are made as the figure draws: size them on their axes
                for axis in ("x", "y"):
                    ticks = getattr(ax, f"get_{axis}ticklabels")()
                    if ticks and min(t.get_fontsize() for t in ticks) < smallest:
                        ax.tick_params(axis=axis, labelsize=smallest * 1.02)
                        small = True
            fig.canvas.draw()
            for text in fig.findobj(lambda artist: hasattr(artist, "get_fontsize") and hasattr(artist, "get_text")):
                if text.get_text() and text.get_visible() and text.get_fontsize() < smallest:
                    text.set_fontsize(smallest * 1.02)
                    small = True
            if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):  # that one lays out as it draws
                with warnings.catch_warnings():  # an axes tight_layout cannot place keeps its place
                    warnings.simplefilter("ignore", UserWarning)
                    fig.tight_layout()
            if not small:
                break
        return fig

    return drawn


def config_label(row, keys) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys)


@legible
def model_selection(
    trials: pd.DataFrame, summary: pd.DataFrame, grid_keys: list[str], best: dict, folds: int, epochs: int
) -> plt.Figure:
    """Training and validation misclassification per config: fold means with their spread
    (min-max over folds as bars, each fold as a dot), the chosen config highlighted."""
    if len(summary) > 12:
        return _model_selection_ranked(trials, summary, grid_keys, best, folds, epochs)
    configs = summary[grid_keys].to_dict("records")  # keeps each column's type
    labels = [config_label(r, grid_keys) for r in configs]
    x = np.arange(len(summary))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(x) + 3), 4.4), layout="constrained")
    for metric, name, color, shift in (
        ("train_error", "training", "tab:blue", -0.08),
        ("val_error", "validation", "tab:orange", 0.08),
    ):
        # In %, as the text and tables give errors.
        per_config = [
            trials.loc[(trials[grid_keys] == pd.Series(r)).all(axis=1), metric].to_numpy() * 100 for r in configs
        ]
        means = summary[f"{metric}_mean"].to_numpy() * 100
        lo = [m - np.nanmin(v) if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        hi = [np.nanmax(v) - m if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        ax.errorbar(
            x + shift,
            means,
            yerr=[lo, hi],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"{name}: mean, range over folds",
        )
        for i, v in enumerate(per_config):
            ax.plot(np.full(len(v), i + shift), v, ".", color=color, alpha=0.6, markersize=7)
    best_i = configs.index(best)
    ax.plot(
        best_i + 0.08,
        summary["val_error_mean"].iloc[best_i] * 100,
        marker="o",
        markersize=14,
        markerfacecolor="none",
        markeredgecolor="red",
        markeredgewidth=2,
        label="selected",
    )
    ax.set_xticks(x, labels, rotation=60 if len(x) > 6 else 20, ha="right", fontsize=8)
    ax.set_ylabel("misclassification error (%)")
    ax.set_title(f"Model selection: {folds}-fold cross-validation, {epochs} epochs per trial")
    ax.grid(alpha=0.3)
    # Under the axes: the best configuration, circled, is often in the corner a legend would cover.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False, columnspacing=1.0)
    return fig


def _model_selection_ranked(
    trials: pd.DataFrame, summary: pd.DataFrame, grid_keys: list[str], best: dict, folds: int, epochs: int
) -> plt.Figure:
    """For a large grid: one row per config, best at the top, validation error of each fold as dots
    and their mean as a bar, so that every label stays readable at page width."""
    order = summary.sort_values("val_error_mean", kind="stable", na_position="last")
    configs = order[grid_keys].to_dict("records")
    fig, ax = plt.subplots(figsize=(7, 0.2 * len(configs) + 1.2))
    y = np.arange(len(configs))[::-1]
    ax.barh(y, order["val_error_mean"] * 100, color="tab:orange", alpha=0.35, label=f"mean over {folds} folds")
    for yi, r in zip(y, configs):
        v = trials.loc[(trials[grid_keys] == pd.Series(r)).all(axis=1), "val_error"] * 100
        ax.plot(v, np.full(len(v), yi), "o", color="tab:orange", ms=3)
    labels = [("▶ " if r == best else "") + ", ".join(f"{k}={r[k]}" for k in grid_keys) for r in configs]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("validation misclassification error (%)")
    ax.set_title(
        f"{len(configs)} configurations, {folds}-fold cross-validation, {epochs} epochs per trial; ▶ selected",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(configs) - 0.3)
    fig.tight_layout()
    return fig


@legible
def learning_curves(history: list[dict] | pd.DataFrame, title: str = "", cut: bool = False) -> plt.Figure:
    """Proxy loss and misclassification error per epoch, on the training batches and the test set;
    `cut`: the error axis cut at three times the last epoch's errors, where the late epochs differ."""
    h = pd.DataFrame(history)
    for column in ("train_error", "eval_error"):  # in %, as the text and tables give errors
        if column in h:
            h[column] = h[column] * 100
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, metric, name in (
        (axes[0], "loss", "proxy loss (cross-entropy)"),
        (axes[1], "error", "misclassification error (%)"),
    ):
        ax.plot(h["epoch"], h[f"train_{metric}"], "o-", label="training (running, during the epoch)")
        if f"eval_{metric}" in h:
            ax.plot(h["epoch"], h[f"eval_{metric}"], "o-", label="test (after the epoch)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if cut and metric == "error":
            top = 3 * max(h["train_error"].iloc[-1], h.get("eval_error", h["train_error"]).iloc[-1])
            ax.set_ylim(0, top)
            ax.set_ylabel(f"error (%), axis cut at {top:.1f}")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    # One legend above both panels: inside either it would cover the first epochs' points.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=2, frameon=False)
    return fig


@legible
def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor) -> plt.Figure:
    # Sized to share a page with another figure: a page of its own would leave half of two blank.
    # No title (the caption says what it is): the height goes to cells wide enough for "1130".
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ConfusionMatrixDisplay.from_predictions(
        labels.numpy(), predicted.numpy(), ax=ax, colorbar=False, cmap="Blues", text_kw={"fontsize": MIN_PRINT_PT}
    )
    fig.tight_layout()
    return fig


@legible
def digit_grid(images: torch.Tensor, titles: list[str], cols: int = 6) -> plt.Figure:
    """uint8 digits (N, 1, 28, 28) with a caption over each, large enough to read at page width."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.65 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img[0].numpy(), cmap="gray_r")
        ax.set_title(t, fontsize=13)
    fig.tight_layout()
    return fig


@legible
def digit_patches(image: torch.Tensor, patch_grid: torch.Tensor) -> plt.Figure:
    """A digit, and the same digit cut into the patches the model sees as tokens.
    `patch_grid`: (rows, cols, C, p, p) from `explain.patches`."""
    rows, cols = patch_grid.shape[:2]
    fig = plt.figure(figsize=(8, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(image[0].numpy(), cmap="gray_r")
    p = image.shape[-1] // cols
    for k in range(1, cols):
        ax.axvline(k * p - 0.5, color="tab:red", lw=0.6)
        ax.axhline(k * p - 0.5, color="tab:red", lw=0.6)
    ax.set_title(f"{image.shape[-1]}×{image.shape[-1]} digit, {rows * cols} patches of {p}×{p}")
    ax.axis("off")
    grid = fig.add_gridspec(rows, cols, left=0.55, right=0.98, top=0.88, bottom=0.05, wspace=0.15, hspace=0.15)
    for r in range(rows):
        for c in range(cols):
            a = fig.add_subplot(grid[r, c])
            a.imshow(patch_grid[r, c, 0].numpy(), cmap="gray_r", vmin=0, vmax=255)
            a.set_xticks([])
            a.set_yticks([])
    fig.text(0.765, 0.93, "tokens 1–49, row by row", ha="center")
    return fig


@legible
def position_similarity(similarity: torch.Tensor, kind: str) -> plt.Figure:
    """What a position table does to 2-D neighbours: the cosine similarity of two patches'
    position embeddings, (a, b) mapped over the image for two reference patches, and (c) against
    the patches' distance in the image, for pairs in the same row, in the same column, or neither.
    A 1-D table makes a patch's neighbours in its row alike and those in its column less so."""
    side = int(round(similarity.shape[0] ** 0.5))
    sim = similarity.numpy()
    centre, row_end = (side // 2) * side + side // 2, (side // 2 - 1) * side + side - 1
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.5]}, layout="constrained")
    for ax, ref, name in ((axes[0], centre, "(a) centre patch"), (axes[1], row_end, "(b) a row's last patch")):
        im = ax.imshow(sim[ref].reshape(side, side), cmap="viridis", vmin=-1, vmax=1)
        r, c = divmod(ref, side)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_title(f"{name}\n(red) against\nevery patch", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:2], shrink=0.75, label="cosine similarity")
    i, j = np.triu_indices(len(sim), k=1)
    (ri, ci), (rj, cj) = np.divmod(i, side), np.divmod(j, side)
    distance = np.hypot(ri - rj, ci - cj)
    # Rows as rings, columns as dots: where a row pair and a column pair coincide, both show.
    for mask, label, style in (
        (ri == rj, "same row", {"s": 60, "facecolors": "none", "edgecolors": "tab:blue", "linewidths": 1.5}),
        (ci == cj, "same column", {"s": 20, "color": "tab:red"}),
        ((ri != rj) & (ci != cj), "neither", {"s": 6, "color": "0.7"}),
    ):
        axes[2].scatter(distance[mask], sim[i[mask], j[mask]], label=label, **style)
    axes[2].set_xlabel("distance in the image (patches)")
    axes[2].set_title(f"(c) cosine similarity of every pair\nof patches, {kind} table", fontsize=11)
    # Under the panel, not in it: every corner of it holds points.
    axes[2].legend(
        fontsize=9,
        markerscale=1.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=3,
        frameon=False,
        columnspacing=0.8,
        handletextpad=0.1,
    )
    axes[2].grid(alpha=0.3)
    return fig


@legible
def attention_overlays(images: torch.Tensor, rollout: torch.Tensor, titles: list[str]) -> plt.Figure:
    """Digits (top) and the class token's attention rollout laid over them (bottom)."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.45 * n, 3.4), squeeze=False)
    size = images.shape[-1]
    for i in range(n):
        axes[0, i].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[0, i].set_title(titles[i], fontsize=13)
        heat = torch.nn.functional.interpolate(rollout[i][None, None], size=(size, size), mode="nearest")[0, 0]
        axes[1, i].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[1, i].imshow(heat.numpy(), cmap="inferno", alpha=0.6)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    return fig


@legible
def main_effects(effects: pd.DataFrame, noise: float) -> plt.Figure:
    """Mean validation error per value of each grid setting (averaged over the rest of the grid),
    one panel per setting on a shared axis, with the median fold standard deviation for scale."""
    settings = list(dict.fromkeys(effects["setting"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(2.6 * len(settings) + 1, 3.4), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], settings):
        part = effects[effects["setting"] == key]
        x = np.arange(len(part))
        ax.errorbar(x, part["mean"] * 100, yerr=noise * 100, fmt="o-", capsize=4, color="tab:blue")
        ax.set_xticks(x, part["value"], fontsize=9)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean validation error (%)")
    fig.tight_layout()
    return fig


@legible
def grid_heatmaps(summary: pd.DataFrame, rows: str, cols: str, panels: list[str], best: dict) -> plt.Figure:
    """Mean validation error (%) of every configuration: `rows` × `cols` in each panel, one panel per
    combination of the `panels` settings, on one colour scale; the selected configuration boxed."""
    groups = list(summary.groupby(panels, sort=True)) if panels else [((), summary)]
    n = len(groups)
    ncols = min(n, 2)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols + 0.8, 2.7 * nrows + 0.3), squeeze=False, layout="constrained"
    )
    low, high = summary["val_error_mean"].min() * 100, summary["val_error_mean"].max() * 100
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (key, part) in zip(axes.flat, groups):
        table = part.pivot_table(index=rows, columns=cols, values="val_error_mean") * 100
        image = ax.imshow(table.to_numpy(), cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            ax.text(
                j, i, f"{value:.1f}", ha="center", va="center", color="white" if value < (low + high) / 2 else "black"
            )
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
        ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        key = key if isinstance(key, tuple) else (key,)
        values = dict(zip(panels, key))
        ax.set_title("\n".join(f"{k} = {v}" for k, v in values.items()))
        if all(best.get(k) == v for k, v in values.items()):
            i, j = list(table.index).index(best[rows]), list(table.columns).index(best[cols])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=3))
    fig.colorbar(image, ax=axes.ravel().tolist(), label="validation error (%)", shrink=0.8)
    return fig


@legible
def per_class_accuracy(accuracy: torch.Tensor) -> plt.Figure:
    """Test error per digit as bars from zero (the error, not the accuracy, so that the bars'
    lengths compare), each labelled with the accuracy."""
    fig, ax = plt.subplots(figsize=(7, 3))
    error = (1 - accuracy.numpy()) * 100
    ax.bar(range(len(error)), error, color="tab:blue")
    ax.set_xticks(range(len(error)))
    ax.set_xlabel("digit")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, error.max() * 1.25)
    for i, e in enumerate(error):
        ax.text(i, e, f"{e:.1f}", ha="center", va="bottom", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


@legible
def seed_spread(accuracies: dict[str, list[float]], claimed: float | None = None) -> plt.Figure:
    """Test accuracy of every seed of each recipe (a dot each, the mean a bar), one row per recipe,
    with a claimed accuracy for reference."""
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(accuracies) + 1.2))
    y = np.arange(len(accuracies))[::-1]
    for yi, (_name, accs) in zip(y, accuracies.items()):
        values = np.asarray(accs) * 100
        # Seeds alternate a little above and below their row, so that close values stay apart.
        offsets = np.where(np.arange(len(values)) % 2, 0.12, -0.12)[np.argsort(np.argsort(values))]
        ax.plot(values, yi + offsets, "o", color="tab:blue", alpha=0.6, ms=6)
        ax.plot([values.mean()] * 2, [yi - 0.3, yi + 0.3], "-", color="black", lw=2)
    if claimed is not None:
        ax.axvline(claimed * 100, color="tab:red", ls="--", lw=1.5, label=f"course report's claim, {claimed:.0%}")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    # Long recipe names on two lines, so that the plot keeps most of the width.
    ax.set_yticks(y, [textwrap.fill(f"{name} ({len(a)} seeds)", 28) for name, a in accuracies.items()])
    ax.set_xlabel("test accuracy (%): each seed a dot, the mean a bar")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.6, len(accuracies) - 0.4)
    fig.tight_layout()
    return fig


@legible
def validation_curves(runs: dict[str, dict]) -> plt.Figure:
    """Validation error per epoch of each run, on a linear axis cut where the early epochs would
    squash the last tenths of a percent that tell the runs apart."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    last = []
    for name, m in runs.items():
        h = pd.DataFrame(m["history"])
        ax.plot(h["epoch"], h["eval_error"] * 100, "-", label=name)
        last.append(float(h["eval_error"].iloc[-1]) * 100)
    top = 2 * max(last)  # the last epochs' band fills a third of the height
    ax.set_ylim(0, top)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation error (%), cut at {top:.1f}")
    ax.grid(alpha=0.3)
    # Above the axes: inside, the legend would lie over the early epochs' curves.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=2, frameon=False, fontsize=9)
    return fig
