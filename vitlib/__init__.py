"""vitlib: a Vision Transformer on MNIST, from the course report's tiny model to a strong one.

Modules, one concern each, in the order data flows: `mnist_files` and `data` (MNIST on disk, then
in memory), `model_config`, `layers` and `model` (the ViT), `augment`, `train`, `inference`,
`checkpoint`, `config`, `parallel` (the job runner; `forking`, `cluster` and `job_progress` serve
it), `results` (when a saved result is reused), `selection` (k-fold model selection),
`experiment` (full-data runs), `study` (the stages the notebooks run), `report` (tables and
prose), `findings` (every number of a report), `build` and `render` (papermill, then nbconvert),
`compare` and `rebuild` (a build against the committed reference), `cli` and `commands`
(`python -m vitlib`; `digit_image` reads a user's digit). docs/architecture.md has the table.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import PRESETS, ExperimentConfig, build_config
from .data import MNIST, kfold_splits, load_mnist
from .inference import evaluate, predict
from .mnist_files import ensure_mnist
from .model import ViT, count_parameters
from .model_config import ViTConfig
from .provenance import package_version
from .train import TrainConfig, fit

__version__ = package_version()
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
