"""What a trained ViT looks at: patches, position-embedding similarity, attention rollout,
per-class accuracy. Computations only; `plots` draws them.

Attention rollout: Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .data import MNIST, to_float
from .inference import predict
from .model import ViT


def patches(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """One (C, H, W) image -> (rows, cols, C, p, p) patches, as the model cuts it."""
    p = patch_size
    return rearrange(image, "c (h p1) (w p2) -> h w c p1 p2", p1=p, p2=p)


def position_similarity(model: ViT) -> torch.Tensor:
    """Cosine similarity between the position embeddings of the patch tokens, (P, P)."""
    if model.pos_embed is None:
        raise ValueError("this model has no position embedding (pos_embed='none')")
    pos = model.pos_embed[0, int(model.cls_token is not None) :].detach().float()
    pos = F.normalize(pos, dim=-1)
    return pos @ pos.T


@torch.no_grad()
def attention_rollout(model: ViT, images: torch.Tensor) -> torch.Tensor:
    """How much the class token draws from each patch, through all blocks: (B, rows, cols).

    Each block's attention, averaged over heads, is mixed with the identity for the residual
    path (0.5 A + 0.5 I), renormalised, and the blocks' matrices are multiplied in order.
    """
    if model.cls_token is None:
        raise ValueError("attention rollout needs a class token (class_token=True)")
    x = to_float(images) if images.dtype == torch.uint8 else images
    maps = model.attention_maps(x.to(next(model.parameters()).device)).float().cpu()  # (depth, B, h, N, N)
    attn = maps.mean(dim=2)  # (depth, B, N, N)
    eye = torch.eye(attn.shape[-1])
    rollout = eye.expand_as(attn[0]).clone()
    for a in attn:
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    side = model.cfg.image_size // model.cfg.patch_size
    return rollout[:, 0, 1:].reshape(-1, side, side)


def per_class_accuracy(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    correct = torch.bincount(labels[predicted == labels], minlength=num_classes).float()
    return correct / torch.bincount(labels, minlength=num_classes).clamp(min=1).float()


def prediction_captions(model, images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    probs = predict(model, images)
    return [f"{int(y)} → {int(p.argmax())} ({float(p.max()):.2f})" for y, p in zip(labels, probs)]


def misclassified(model, data: MNIST, limit: int = 18) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """The test digits the model gets wrong, most confident first, with 'true → predicted (p)' captions,
    and all test predictions."""
    probs = predict(model, data.test_images)
    pred = probs.argmax(1)
    wrong = (pred != data.test_labels).nonzero().flatten()
    order = wrong[probs[wrong, pred[wrong]].argsort(descending=True)][:limit]
    captions = [f"{int(data.test_labels[i])} → {int(pred[i])} ({float(probs[i, pred[i]]):.2f})" for i in order]
    return data.test_images[order], captions, pred
