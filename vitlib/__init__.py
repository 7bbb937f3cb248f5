"""vitlib: a Vision Transformer on MNIST, from the course report's tiny model to a strong one.

Modules, one concern each, in the order data flows: `data`, `model`, `augment`, `train`,
`inference`, `checkpoint`, `config`, `parallel` (the job runner), `results` (when a saved result
is reused), `selection` (k-fold model selection), `experiment` (full-data runs), `study` (the
stages the notebooks run), `report` (tables and prose), `findings` (every number of a report),
`build` and `render` (papermill, then nbconvert), `compare` and `rebuild` (a build against the committed
reference), `cli` (`python -m vitlib`). docs/architecture.md has the table.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .checkpoint import load_checkpoint, save_checkpoint
from .config import PRESETS, ExperimentConfig, build_config
from .data import MNIST, ensure_mnist, kfold_splits, load_mnist
from .inference import evaluate, predict
from .model import ViT, ViTConfig, count_parameters
from .train import TrainConfig, fit

try:  # the version pip installed (pyproject.toml's), recorded in every checkpoint
    __version__ = _version("vitlib")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "PRESETS",
    "ExperimentConfig",
    "build_config",
    "MNIST",
    "ensure_mnist",
    "kfold_splits",
    "load_mnist",
    "ViT",
    "ViTConfig",
    "count_parameters",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
]
