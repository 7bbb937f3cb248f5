"""Training on in-memory tensors: the settings (`TrainConfig`), the model's initialisation, the
optimizer and its schedule, and the loop. `fit` trains a model with the original protocol by default (Adam, lr 0.005, batch 128,
5 epochs) and records per epoch the "proxy loss" (cross-entropy) and the misclassification error,
on the training batches and, when given, on a validation or test set.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .augment import random_affine
from .checks import check_choice, check_fields, check_positive
from .data import to_float
from .forking import keep_forks_usable
from .inference import evaluate
from .model import ViT
from .model_config import ViTConfig


@dataclass
class TrainConfig:
    epochs: int = 5  # passes over the training set
    batch_size: int = 128  # examples per optimizer step (the last batch may be smaller)
    lr: float = 0.005  # peak learning rate
    optimizer: str = "adam"  # 'adam' (the original), 'adamw' or 'sgd' (momentum 0.9)
    weight_decay: float = 0.0  # decoupled for adamw, L2 for adam and sgd
    lr_schedule: str = "constant"  # 'constant' (the original) or 'cosine' (decays to 0 per step)
    warmup_epochs: float = 0.0  # linear warmup from 0 before the schedule
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    grad_clip: float = 0.0  # clip the gradient norm to this (0: off)
    seed: int = 0  # seeds weights, batch order and dropout; same seed on CPU => same numbers
    device: str = "auto"  # 'auto' (cuda, then mps, then cpu), or a torch device such as 'cpu'
    aug_degrees: float = 0.0  # random rotation of each training image, up to +/- this many degrees (0: off)
    aug_translate: float = 0.0  # random shift, up to this fraction of the image side (0: off)
    aug_scale: float = 0.0  # random zoom in [1 - s, 1 + s] (0: off)
    aug_elastic_alpha: float = 0.0  # elastic distortion's strength, as torchvision's ElasticTransform (0: off)
    aug_elastic_sigma: float = 5.0  # its smoothness: the Gaussian blur of the random field, in pixels
    ema_decay: float = 0.0  # keep an exponential moving average of the weights and end with it (0: off)
    compile: bool = False  # torch.compile the training step: ~1.7x faster on CPU after a 30-60 s first compile
    amp: bool = False  # bfloat16 autocast for the forward pass (CUDA, or a CPU with AMX / AVX-512 BF16)
    save_float16: bool = False  # keep the final weights as float16 (half the checkpoint); the test scores those

    def __post_init__(self):
        check_fields(self)
        check_positive(self, ("epochs", "batch_size"))
        if not 0 <= self.seed < 2**31:  # numpy's and torch's generators take it, plus an offset per run
            raise ValueError(f"seed must be a whole number from 0 to {2**31 - 1}, got {self.seed}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr (learning rate) must be a positive number, got {self.lr}")
        check_choice("optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in (
            "weight_decay",
            "warmup_epochs",
            "grad_clip",
            "aug_degrees",
            "aug_translate",
            "aug_scale",
            "aug_elastic_alpha",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.aug_elastic_sigma > 0:
            raise ValueError(f"aug_elastic_sigma must be > 0 (pixels), got {self.aug_elastic_sigma}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(
                    f"device={self.device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'"
                ) from err


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device a setting names ('auto': a GPU where there is one, else the CPU)."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def usable_device(device: str = "auto") -> torch.device:
    """`resolve_device`, refused in one line when this machine does not have that device."""
    resolved = resolve_device(device)
    missing = (resolved.type == "cuda" and not torch.cuda.is_available()) or (
        resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )
    if missing:
        found = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        raise ValueError(
            f"device={device!r}, but torch finds no {resolved.type.upper()} device on this machine (it has: "
            f"{', '.join(found)}). Fix: device 'auto' (a GPU where there is one) or 'cpu'"
        )
    return resolved


_INIT_LOCK = threading.Lock()  # seeding and drawing from torch's global generator must not interleave


def build_model(model_cfg: ViTConfig, seed: int, device: torch.device | str = "cpu") -> ViT:
    """A freshly initialised model; the same seed gives the same weights (also across threads)."""
    with _INIT_LOCK:
        torch.manual_seed(seed)
        model = ViT(model_cfg)
    return model.to(device)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # The fused Adam/AdamW kernel updates every tensor in one pass: measured on 2 CPU cores,
    # 0.3 ms per step against 1.8 ms for the default loop over ~40 small parameter tensors.
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adamw":
        # No decay on biases, norms, tokens and position tables, as in timm.
        decay = [p for p in model.parameters() if p.ndim >= 2 and p.requires_grad]
        no_decay = [p for p in model.parameters() if p.ndim < 2 and p.requires_grad]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


_compiled_shape: tuple | None = None  # the parameter shapes this process last compiled for


def forget_other_compiled_models(model: nn.Module) -> None:
    """Empty torch.compile's cache when `model` differs in shape from the last model compiled here.

    A worker that runs trials of many configurations would otherwise pile up one compiled graph
    per configuration, pass torch._dynamo's recompile limit (8) and train every later trial
    eagerly, with a warning: which trials ran compiled would depend on how they were scheduled.
    Trials of the same shape (the folds of one configuration) keep reusing their compiled graph.
    """
    global _compiled_shape
    if threading.current_thread() is not threading.main_thread():
        # Trials in threads may be running compiled graphs right now: keep them all instead.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
        return
    shape = (type(model).__name__,) + tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    if shape != _compiled_shape:
        torch._dynamo.reset()
        _compiled_shape = shape


def fit(
    model: ViT,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    eval_set: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place on uint8 `images` and int64 `labels`; return the per-epoch history.

    Each history row: epoch, train_loss and train_error (running, over the epoch's batches, as
    the original reports them), eval_loss and eval_error on `eval_set` when given, lr, seconds.
    Raises TrainingDiverged when the loss stops being finite.
    """
    classes = model.cfg.num_classes
    if len(labels) and int(labels.max()) >= classes:
        raise ValueError(
            f"num_classes={classes}, but the labels go up to {int(labels.max())}. Fix: num_classes "
            f"{int(labels.max()) + 1} (MNIST has 10 digits)"
        )
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)  # resident: batches are index lookups
    n = len(images)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    optimizer = make_optimizer(model, cfg)
    # The compiled module shares the model's parameters; the last, smaller batch of an epoch
    # runs eagerly so that one input shape is compiled, not two.
    if cfg.compile:  # a CUDA build on a machine without CUDA warns about it at every compile
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        keep_forks_usable()  # so that trials can still be forked from this process afterwards
        forget_other_compiled_models(model)
    step_model = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    augment = bool(cfg.aug_degrees or cfg.aug_translate or cfg.aug_scale or cfg.aug_elastic_alpha)
    aug_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
        )
        if cfg.ema_decay
        else None
    )
    order_rng = torch.Generator().manual_seed(cfg.seed)
    with _INIT_LOCK:
        torch.manual_seed(cfg.seed)  # dropout and stochastic depth
    history, step = [], 0
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False, unit="step")
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(n, generator=order_rng).to(device)
        for batch in order.split(cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, total_steps, warmup_steps, cfg.lr_schedule)
            x, y = to_float(images[batch]), labels[batch]
            if augment:
                x = random_affine(
                    x,
                    cfg.aug_degrees,
                    cfg.aug_translate,
                    cfg.aug_scale,
                    aug_rng,
                    cfg.aug_elastic_alpha,
                    cfg.aug_elastic_sigma,
                )
            with autocast:
                out = (step_model if len(batch) == cfg.batch_size else model)(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(batch)
            wrong += (out.detach().argmax(dim=1) != y).sum()
            step += 1
            bar.update()
        row = {"epoch": epoch, "train_loss": loss_sum.item() / n, "train_error": wrong.item() / n}
        if not math.isfinite(row["train_loss"]):
            bar.close()
            raise TrainingDiverged(
                f"loss became {row['train_loss']} in epoch {epoch} (lr={cfg.lr}); try a smaller learning rate"
            )
        if eval_set is not None:  # the curves score the image alone: shifted copies would cost 5x per epoch
            ev = evaluate(ema.module if ema is not None else model, *eval_set, shifts=0)
            row.update(eval_loss=ev["loss"], eval_error=ev["error"])
        row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start)
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{row['train_error']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    if ema is not None:  # end with the averaged weights: they are what was evaluated
        model.load_state_dict(ema.module.state_dict())
    return history
