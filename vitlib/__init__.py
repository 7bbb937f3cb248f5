"""vitlib: a Vision Transformer on MNIST, from the course report's tiny model to a strong one.

Modules, one concern each: `config` (presets, validated settings), `data` (MNIST on disk and in
memory), `model` (the ViT), `train` (fit, evaluate, checkpoints), `selection` (k-fold model
selection), `experiment` (end-to-end runs that write results), `cli` (`python -m vitlib`).
"""

from .config import PRESETS, ExperimentConfig, build_config
from .data import MNIST, ensure_mnist, kfold_splits, load_mnist
from .model import ViT, ViTConfig, count_parameters
from .train import TrainConfig, evaluate, fit, load_checkpoint, predict, save_checkpoint

__version__ = "0.1.0"
__all__ = ["PRESETS", "ExperimentConfig", "build_config", "MNIST", "ensure_mnist", "kfold_splits",
           "load_mnist", "ViT", "ViTConfig", "count_parameters", "TrainConfig", "evaluate", "fit",
           "load_checkpoint", "predict", "save_checkpoint"]
