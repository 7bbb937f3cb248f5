"""Figures for the report: model selection, learning curves, confusion matrix, digits.

Each function takes results (DataFrames, histories, tensors) and returns a matplotlib Figure;
none of them trains or evaluates anything.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import ConfusionMatrixDisplay


def config_label(row, keys) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys)


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
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(x) + 3), 4.2))
    for metric, name, color, shift in (
        ("train_error", "training", "tab:blue", -0.08),
        ("val_error", "validation", "tab:orange", 0.08),
    ):
        per_config = [trials.loc[(trials[grid_keys] == pd.Series(r)).all(axis=1), metric].to_numpy() for r in configs]
        means = summary[f"{metric}_mean"].to_numpy()
        lo = [m - np.nanmin(v) if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        hi = [np.nanmax(v) - m if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        ax.errorbar(
            x + shift,
            means,
            yerr=[lo, hi],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"{name} (mean, min-max over folds)",
        )
        for i, v in enumerate(per_config):
            ax.plot(np.full(len(v), i + shift), v, ".", color=color, alpha=0.4)
    best_i = configs.index(best)
    ax.plot(
        best_i + 0.08,
        summary["val_error_mean"].iloc[best_i],
        marker="o",
        markersize=14,
        markerfacecolor="none",
        markeredgecolor="red",
        markeredgewidth=2,
        label="selected",
    )
    ax.set_xticks(x, labels, rotation=60 if len(x) > 6 else 20, ha="right", fontsize=8)
    ax.set_ylabel("misclassification error")
    ax.set_title(f"Model selection: {folds}-fold CV, {epochs} epochs per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
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
    ax.set_title(f"{len(configs)} configurations, {folds}-fold CV, {epochs} epochs per trial; ▶ selected", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(configs) - 0.3)
    fig.tight_layout()
    return fig


def learning_curves(history: list[dict] | pd.DataFrame, title: str = "") -> plt.Figure:
    """Proxy loss and misclassification error per epoch, on the training batches and the test set."""
    h = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, name in (
        (axes[0], "loss", "proxy loss (cross-entropy)"),
        (axes[1], "error", "misclassification error"),
    ):
        ax.plot(h["epoch"], h[f"train_{metric}"], "o-", label="training (running, during the epoch)")
        if f"eval_{metric}" in h:
            ax.plot(h["epoch"], h[f"eval_{metric}"], "o-", label="test (after the epoch)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ConfusionMatrixDisplay.from_predictions(labels.numpy(), predicted.numpy(), ax=ax, colorbar=False, cmap="Blues")
    ax.set_title("Confusion matrix on the test set")
    fig.tight_layout()
    return fig


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


def position_similarity(similarity: torch.Tensor, kind: str) -> plt.Figure:
    """What a position table does to 2-D neighbours: the cosine similarity of two patches'
    position embeddings, (a, b) mapped over the image for two reference patches, and (c) against
    the patches' distance in the image, for pairs in the same row, in the same column, or neither.
    A 1-D table makes a patch's neighbours in its row alike and those in its column less so."""
    side = int(round(similarity.shape[0] ** 0.5))
    sim = similarity.numpy()
    centre, row_end = (side // 2) * side + side // 2, (side // 2 - 1) * side + side - 1
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.5]}, layout="constrained")
    for ax, ref, name in ((axes[0], centre, "(a) the centre patch"), (axes[1], row_end, "(b) the last patch of a row")):
        im = ax.imshow(sim[ref].reshape(side, side), cmap="viridis", vmin=-1, vmax=1)
        r, c = divmod(ref, side)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_title(f"{name} (red)\nagainst every patch", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:2], shrink=0.75, label="cosine similarity")
    i, j = np.triu_indices(len(sim), k=1)
    (ri, ci), (rj, cj) = np.divmod(i, side), np.divmod(j, side)
    distance = np.hypot(ri - rj, ci - cj)
    for mask, label, color, size in (
        (ri == rj, "same row", "tab:blue", 30),
        (ci == cj, "same column", "tab:red", 30),
        ((ri != rj) & (ci != cj), "neither", "0.7", 6),
    ):
        axes[2].scatter(distance[mask], sim[i[mask], j[mask]], s=size, alpha=0.6, color=color, label=label)
    axes[2].set_xlabel("distance between the two patches in the image (patches)")
    axes[2].set_title(f"(c) cosine similarity of every pair\nof patches, {kind} table", fontsize=11)
    axes[2].legend(fontsize=9, markerscale=1.5, loc="lower left")
    axes[2].grid(alpha=0.3)
    return fig


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


def per_class_accuracy(accuracy: torch.Tensor) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(accuracy)), accuracy.numpy(), color="tab:blue")
    ax.set_xticks(range(len(accuracy)))
    ax.set_xlabel("digit")
    ax.set_ylabel("test accuracy")
    low = float(accuracy.min())
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    for i, a in enumerate(accuracy.numpy()):
        ax.text(i, a, f"{a:.1%}", ha="center", va="bottom", fontsize=7)
    ax.set_title("Test accuracy per class")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def validation_curves(runs: dict[str, dict]) -> plt.Figure:
    """Validation error per epoch of each run (log scale: the last tenths of a percent matter)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, m in runs.items():
        h = pd.DataFrame(m["history"])
        ax.plot(h["epoch"], h["eval_error"] * 100, "-", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%), log scale")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
