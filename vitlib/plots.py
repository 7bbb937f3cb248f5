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


def model_selection(trials: pd.DataFrame, summary: pd.DataFrame, grid_keys: list[str], best: dict,
                    folds: int, epochs: int) -> plt.Figure:
    """Training and validation misclassification per config: fold means with their spread
    (min-max over folds as bars, each fold as a dot), the chosen config highlighted."""
    configs = summary[grid_keys].to_dict("records")  # keeps each column's type
    labels = [config_label(r, grid_keys) for r in configs]
    x = np.arange(len(summary))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(x) + 3), 4.2))
    for metric, name, color, shift in (("train_error", "training", "tab:blue", -0.08),
                                       ("val_error", "validation", "tab:orange", 0.08)):
        per_config = [trials.loc[(trials[grid_keys] == pd.Series(r)).all(axis=1), metric].to_numpy()
                      for r in configs]
        means = summary[f"{metric}_mean"].to_numpy()
        lo = [m - np.nanmin(v) if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        hi = [np.nanmax(v) - m if len(v) and not np.isnan(v).all() else 0 for m, v in zip(means, per_config)]
        ax.errorbar(x + shift, means, yerr=[lo, hi], fmt="o-", color=color, capsize=3,
                    label=f"{name} (mean, min-max over folds)")
        for i, v in enumerate(per_config):
            ax.plot(np.full(len(v), i + shift), v, ".", color=color, alpha=0.4)
    best_i = configs.index(best)
    ax.plot(best_i + 0.08, summary["val_error_mean"].iloc[best_i], marker="o", markersize=14,
            markerfacecolor="none", markeredgecolor="red", markeredgewidth=2, label="selected")
    ax.set_xticks(x, labels, rotation=60 if len(x) > 6 else 20, ha="right", fontsize=8)
    ax.set_ylabel("misclassification error")
    ax.set_title(f"Model selection: {folds}-fold CV, {epochs} epochs per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(history: list[dict] | pd.DataFrame, title: str = "") -> plt.Figure:
    """Proxy loss and misclassification error per epoch, on the training batches and the test set."""
    h = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, name in ((axes[0], "loss", "proxy loss (cross-entropy)"),
                             (axes[1], "error", "misclassification error")):
        ax.plot(h["epoch"], h[f"train_{metric}"], "o-", label="training (running, during the epoch)")
        if f"eval_{metric}" in h:
            ax.plot(h["epoch"], h[f"eval_{metric}"], "o-", label="test (after the epoch)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ConfusionMatrixDisplay.from_predictions(labels.numpy(), predicted.numpy(), ax=ax, colorbar=False,
                                            cmap="Blues")
    ax.set_title("Confusion matrix on the test set")
    fig.tight_layout()
    return fig


def digit_grid(images: torch.Tensor, titles: list[str], cols: int = 8, title: str = "") -> plt.Figure:
    """uint8 digits (N, 1, 28, 28) with a caption under each."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img[0].numpy(), cmap="gray_r")
        ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(title)
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


def position_similarity(similarity: torch.Tensor, title: str) -> plt.Figure:
    """Cosine similarity of each patch's position embedding to every other, as in the ViT paper:
    one small map per patch, laid out where that patch sits in the image."""
    side = int(round(similarity.shape[0] ** 0.5))
    maps = similarity.reshape(side, side, side, side).numpy()
    fig, axes = plt.subplots(side, side, figsize=(6, 6))
    for r in range(side):
        for c in range(side):
            axes[r, c].imshow(maps[r, c], cmap="viridis", vmin=-1, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_overlays(images: torch.Tensor, rollout: torch.Tensor, titles: list[str]) -> plt.Figure:
    """Digits with the class token's attention rollout laid over them."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    size = images.shape[-1]
    for i in range(n):
        axes[0, i].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[0, i].set_title(titles[i], fontsize=8)
        heat = torch.nn.functional.interpolate(rollout[i][None, None], size=(size, size), mode="nearest")[0, 0]
        axes[1, i].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[1, i].imshow(heat.numpy(), cmap="inferno", alpha=0.6)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("Attention rollout of the class token (bottom: brighter = more attention)")
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
