"""Scoring and predicting without gradients, in large batches: a model's loss and error on a set of
images, and its class probabilities, optionally averaged over the image and its shifted copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import to_float
from .model import ViT

EVAL_BATCH = 1000  # evaluation needs no gradients, so larger batches are cheaper


@torch.no_grad()
def evaluate(
    model: ViT,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    shifts: int | None = None,
    per_image: bool = False,
) -> dict:
    """Mean cross-entropy ("proxy loss") and misclassification error of `model` on uint8 images.

    Like the original, the loss is CrossEntropyLoss applied to what the model outputs, so with
    `head_softmax` on it is the loss of the double softmax the original trained with. With shifted
    copies (`shifts`, by default the model's `test_shifts`, > 0) it scores the model's prediction,
    the probabilities averaged over the copies, and the loss is their negative log-likelihood (for
    a `head_softmax` model, of its averaged outputs: not comparable with its single-view loss); the
    error of the image alone comes with it, from the same pass, as "error_single_view". With
    `per_image`, also "correct": a bool per image, on the CPU.
    """
    device = next(model.parameters()).device
    shifts = model.cfg.test_shifts if shifts is None else shifts
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.long)
    wrong_alone = torch.zeros((), device=device, dtype=torch.long)
    correct = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        y = labels[start : start + batch_size].to(device)
        if shifts:
            views = model.view_probabilities(x, shifts)
            wrong_alone += (views[0].argmax(dim=1) != y).sum()
            out = views.mean(dim=0).clamp_min(1e-12).log()
            loss_sum += F.nll_loss(out, y, reduction="sum")
        else:
            out = model(x)
            loss_sum += F.cross_entropy(out, y, reduction="sum")
        right = out.argmax(dim=1) == y
        wrong += (~right).sum()
        if per_image:
            correct.append(right.cpu())
    model.train(was_training)
    n = len(images)
    scores = {"loss": loss_sum.item() / n, "error": wrong.item() / n}
    if shifts:
        scores["error_single_view"] = wrong_alone.item() / n
    if per_image:
        scores["correct"] = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
    return scores


@torch.no_grad()
def predict(model: ViT, images: torch.Tensor, batch_size: int = EVAL_BATCH, shifts: int | None = None) -> torch.Tensor:
    """Class probabilities (N, num_classes) for uint8 or float images, on the CPU (averaged over
    shifted copies when `shifts`, by default the model's `test_shifts`, is > 0)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        out.append(model.predict_proba(x, shifts).cpu())
    return torch.cat(out)
