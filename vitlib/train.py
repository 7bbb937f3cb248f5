"""Training and evaluation on in-memory tensors, and checkpoints.

`fit` trains a model with the original protocol by default (Adam, lr 0.005, batch 128,
5 epochs) and records per epoch the "proxy loss" (cross-entropy) and the misclassification error,
on the training batches and, when given, on a validation or test set.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checks import check_choice, check_fields
from .data import to_float
from .files import atomic_file, readable_file
from .model import ViT, ViTConfig
from .parallel import keep_forks_usable

EVAL_BATCH = 1000  # evaluation needs no gradients, so larger batches are cheaper


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
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
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
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def random_affine(
    x: torch.Tensor,
    degrees: float,
    translate: float,
    scale: float,
    generator: torch.Generator | None = None,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 5.0,
) -> torch.Tensor:
    """Each image of the batch rotated, shifted and zoomed at random, and (`elastic_alpha` > 0)
    distorted by its own smooth random field, in one `grid_sample` on the images' own device (no
    per-sample Python). `translate` is a fraction of the image side."""
    b = x.shape[0]

    def uniform(*shape):  # in [-1, 1)
        return torch.rand(*shape, device=x.device, generator=generator) * 2 - 1

    angle = uniform(b) * math.radians(degrees)
    zoom = 1 + uniform(b) * scale
    shift = uniform(b, 2) * translate * 2  # affine_grid's coordinates span [-1, 1]: 2 per image side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic_alpha:  # drawn after the affine parameters: runs without it keep their random numbers
        grid = grid + elastic_displacement(uniform(b, 2, *x.shape[-2:]), elastic_alpha, elastic_sigma)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_displacement(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Simard et al. (2003)'s elastic distortion field for a batch, made from `noise` (B, 2, H, W),
    uniform in [-1, 1), as torchvision's ElasticTransform makes its one field per call: blurred by a
    Gaussian (kernel of 8 sigma + 1 pixels, reflected at the border), times alpha / width for x and
    alpha / height for y. Returns (B, H, W, 2) in `grid_sample`'s units (2 per image side), so a unit
    of blurred noise moves a pixel by alpha / 2 pixels."""
    h, w = noise.shape[-2:]
    # The blur as two small matrices (rows, then columns): torchvision's gaussian_blur is a 2-D
    # depthwise convolution with a 41x41 kernel at sigma 5, ~100x slower than the step on a CPU.
    blur_h, blur_w = (gaussian_blur_matrix(n, sigma, noise.device) for n in (h, w))
    field = blur_h @ noise @ blur_w.T
    scale = torch.tensor([alpha / w, alpha / h], device=noise.device).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)


@functools.cache
def gaussian_blur_matrix(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n, n) matrix M: M @ v is torchvision's 1-D Gaussian blur of v with reflected borders."""
    k = int(8 * sigma + 1) | 1  # odd, as torchvision makes it
    if k // 2 >= n:
        raise ValueError(
            f"aug_elastic_sigma={sigma:g} blurs over {k} pixels, too wide for a {n}-pixel image side (reflected "
            f"borders need under {2 * n}); use aug_elastic_sigma < {(2 * n - 1) / 8:g}"
        )
    half = (k - 1) / 2
    kernel = torch.exp(-0.5 * (torch.linspace(-half, half, k) / sigma) ** 2)
    basis = F.pad(torch.eye(n).unsqueeze(1), (k // 2, k // 2), mode="reflect")  # each unit vector, padded
    columns = F.conv1d(basis, (kernel / kernel.sum()).view(1, 1, k)).squeeze(1)  # row i: the blur of e_i
    return columns.T.contiguous().to(device)


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


CHECKPOINT_FORMAT = 1  # raise when the layout below changes in a way older readers cannot follow
_NOT_A_CHECKPOINT = (
    "{path} is not a readable vitlib checkpoint (truncated, another kind of file, or changed "
    "since it was written): {reason}. Fix: give the checkpoint.pt that `python -m vitlib train "
    "--out DIR` wrote, or train a new one"
)
_TRAIN_ONE = "train one with `python -m vitlib train --out DIR` (it writes DIR/checkpoint.pt)"


def round_to_float16(model: nn.Module) -> None:
    """Round every floating tensor that a checkpoint stores (the state dict: weights and persistent
    buffers; a fixed sinusoidal table is rebuilt on loading, so it stays) to float16 in place, kept
    in its own dtype: the model then computes exactly what one loaded from a float16 file does."""
    with torch.no_grad():
        for name, t in model.state_dict().items():  # these share the model's storage
            if t.is_floating_point():
                half = t.half()
                if not torch.isfinite(half).all():
                    raise ValueError(f"{name} does not fit in float16 (|w| > 65504): train with save_float16 off")
                t.copy_(half)


def save_checkpoint(
    path: str | Path, model: ViT, config: dict, history: list[dict], metrics: dict | None = None
) -> Path:
    """Weights, the config that made them, the history and metrics, in one file (atomically),
    marked with the checkpoint format and the vitlib version that wrote it. With the config's
    save_float16 the floating weights are stored as float16; the caller rounds the model with
    `round_to_float16` first (train_and_test does), so that the file holds the model that was
    scored. Loading turns them back into the model's float32."""
    from . import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = config.get("train", {}).get("save_float16", False)
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "vitlib_version": __version__,
        "model": weights,
        "config": config,
        "history": history,
        "metrics": metrics or {},
    }
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ViT, dict]:
    """The model (in eval mode) and the checkpoint's dict (config, history, metrics).

    Refused with one line naming the problem: not a checkpoint, truncated, written by a newer
    vitlib (a format or model setting this one does not know), or weights of another shape.
    Checkpoints from before the format was recorded (format 0) have the same layout and load.
    """
    from . import __version__

    path = readable_file(path, "checkpoint", _TRAIN_ONE)
    # weights_only: a checkpoint from a stranger can hold tensors and plain data, never code.
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- whatever a damaged file makes the unpickler raise
        reason = (
            "it holds something other than tensors and plain data"
            if isinstance(err, pickle.UnpicklingError)
            else "PyTorch cannot read it as a saved file"
        )  # torch's own reason ('101') says nothing
        raise ValueError(_NOT_A_CHECKPOINT.format(path=path, reason=reason)) from None
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("model"), dict)
        and isinstance(payload.get("config"), dict)
        and isinstance(payload["config"].get("model"), dict)
    ):
        raise ValueError(_NOT_A_CHECKPOINT.format(path=path, reason="it has no model weights and config"))
    written_by = f"vitlib {payload.get('vitlib_version', 'before 0.1')}"
    if not isinstance(payload.get("format", 0), int) or payload.get("format", 0) > CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is in checkpoint format {payload.get('format')!r}, written by {written_by}; this "
            f"vitlib ({__version__}) reads formats up to {CHECKPOINT_FORMAT}. Fix: update vitlib "
            f"(git pull && make setup), or retrain with this version"
        )
    settings = payload["config"]["model"]
    known = {f.name for f in dataclasses.fields(ViTConfig)}
    if set(settings) - known:
        raise ValueError(
            f"{path} describes a model with settings this vitlib ({__version__}) does not know: "
            f"{', '.join(sorted(set(settings) - known))} (written by {written_by}). Fix: update "
            f"vitlib (git pull && make setup), or retrain with this version"
        )
    try:
        model = ViT(ViTConfig(**settings))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{path} holds an invalid model config ({err}). Fix: give a checkpoint written by "
            f"`python -m vitlib train`, or train a new one"
        ) from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err)[:200])
        raise ValueError(
            f"{path}: its weights do not fit the model its config describes ({detail}); the file "
            f"was changed or mixes two models. Fix: use the checkpoint.pt exactly as `train` wrote "
            f"it, or train a new one"
        ) from None
    return model.to(resolve_device(str(device))).eval(), payload
