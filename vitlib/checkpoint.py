"""Checkpoints: weights, the config that made them, history and metrics in one file, written
atomically, loaded with `weights_only` (a stranger's file can hold tensors and plain data, never
code), and refused with one line when damaged, foreign or newer than this vitlib.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from .files import atomic_file, readable_file
from .model import ViT
from .model_config import ViTConfig
from .provenance import package_version
from .train import resolve_device

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = config.get("train", {}).get("save_float16", False)
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "vitlib_version": package_version(),
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
            f"vitlib ({package_version()}) reads formats up to {CHECKPOINT_FORMAT}. Fix: update vitlib "
            f"(git pull && make setup), or retrain with this version"
        )
    settings = payload["config"]["model"]
    known = {f.name for f in dataclasses.fields(ViTConfig)}
    if set(settings) - known:
        raise ValueError(
            f"{path} describes a model with settings this vitlib ({package_version()}) does not know: "
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
    broken = next(
        (name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()), None
    )
    if broken is not None:  # a diverged run's weights: every prediction would be NaN
        raise ValueError(
            f"{path} holds weights that are not finite (NaN or infinity in {broken}): it predicts nothing. "
            f"Fix: train it again, with a smaller learning rate if it diverged"
        )
    return model.to(resolve_device(str(device))).eval(), payload
