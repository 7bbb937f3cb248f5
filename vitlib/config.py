"""One experiment configuration: presets, YAML files and flat overrides, validated.

Configuration flows one way: a preset, then a YAML file, then flat `key=value` overrides
(CLI flags or papermill parameters) -> `ExperimentConfig` -> library calls. Every key names exactly
one field of one section (model, train, data, selection); unknown keys are rejected with the list
of valid ones.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .checks import as_number, check_choice, check_fields, reject_unknown
from .data import DEFAULT_ROOT
from .files import readable_file
from .model import ViTConfig
from .train import TrainConfig


@dataclass
class DataConfig:
    data_root: str = DEFAULT_ROOT  # folder holding MNIST/raw (made by `make data`)
    train_limit: int = 0  # use only the first N training images (0: all 60,000)
    test_limit: int = 0  # use only the first N test images (0: all 10,000)
    validation_size: int = 0  # hold out N training images (fixed random choice) and score on them, not the test set

    def __post_init__(self):
        check_fields(self)
        if self.train_limit < 0 or self.test_limit < 0:
            raise ValueError("train_limit and test_limit must be >= 0 (0 means the whole split)")
        if self.validation_size < 0:
            raise ValueError(f"validation_size must be >= 0 (0: score on the test set), got {self.validation_size}")


JOBLIB_BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "ray", "dask")


@dataclass
class SelectionConfig:
    folds: int = 3  # k of k-fold cross-validation
    shuffle_folds: bool = False  # the original used KFold(shuffle=False)
    grid: dict = field(default_factory=dict)  # {key: [values]}: the configs to compare
    n_jobs: int = 1  # trials run in parallel (joblib); -1: one per CPU core
    joblib_backend: str = "loky"  # joblib backend: 'loky' (local processes), 'threading', 'sequential', 'ray' or 'dask'

    def __post_init__(self):
        check_fields(self)
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ValueError(f"n_jobs must be a positive number of workers or -1 (all cores), got {self.n_jobs}")
        check_choice("joblib_backend", self.joblib_backend, JOBLIB_BACKENDS)


SECTIONS = {"model": ViTConfig, "train": TrainConfig, "data": DataConfig, "selection": SelectionConfig}
FIELD_SECTION = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}


@dataclass
class ExperimentConfig:
    model: ViTConfig = field(default_factory=ViTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self):
        reject_unknown(
            self.selection.grid, {k for k, s in FIELD_SECTION.items() if s in ("model", "train")}, "grid key"
        )
        for key in self.selection.grid:
            values = self.selection.grid[key]
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid[{key!r}] must be a non-empty list of values")
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:  # its trials would count twice in that value's mean, and the best would be wrong
                raise ValueError(f"grid[{key!r}] lists {repeated[0]!r} more than once. Fix: list each value once")
        for combo in self.grid_points():  # every point of the grid must be a valid config
            _apply_sections(self, combo)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any] | None = None, **kwargs) -> ExperimentConfig:
        """A copy with flat overrides applied, e.g. `cfg.with_overrides(epochs=1, depth=3)`."""
        overrides = {**(overrides or {}), **kwargs}
        reject_unknown(overrides, set(FIELD_SECTION), "setting")
        return ExperimentConfig(**_apply_sections(self, overrides))

    def grid_points(self) -> list[dict]:
        """Every combination of the selection grid, in the order the grid lists them."""
        return grid_points(self.selection.grid)

    def flat(self) -> dict:
        """All settings as one flat dict (keys are unique across sections)."""
        return {k: v for section in self.to_dict().values() for k, v in section.items()}


def grid_points(grid: dict) -> list[dict]:
    """{'a': [1, 2], 'b': [3]} -> [{'a': 1, 'b': 3}, {'a': 2, 'b': 3}]: the grid's order, last key fastest."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _apply_sections(cfg: ExperimentConfig, overrides: dict) -> dict:
    """Each section of `cfg` with its share of the flat overrides applied (and validated)."""
    parts = {name: getattr(cfg, name) for name in SECTIONS}
    for name in SECTIONS:
        mine = {k: copy.deepcopy(v) for k, v in overrides.items() if FIELD_SECTION[k] == name}
        if mine:
            parts[name] = replace(parts[name], **mine)
    return parts


# The course report's model: per-head q/k/v, no output projection, fixed sinusoidal positions,
# no final LayerNorm, PyTorch default init. Its double softmax is a flag, off here.
ORIGINAL_MODEL = dict(
    patch_size=4,
    embed_dim=8,
    num_heads=2,
    qkv_per_head=True,
    attn_out_proj=False,
    pos_embed="sinusoidal",
    final_norm=False,
    init="torch",
    head_softmax=False,
)

PRESETS: dict[str, dict] = {
    # The original experiment, double softmax removed: best config 3 blocks x 16 units,
    # model selection over depth {2, 3} x MLP hidden units {16, 32}, 3 folds.
    "seed": {**ORIGINAL_MODEL, "depth": 3, "mlp_hidden_dim": 16, "grid": {"depth": [2, 3], "mlp_hidden_dim": [16, 32]}},
    # The same, bug for bug: the softmax in the head, as the report was trained (~73%).
    "original": {
        **ORIGINAL_MODEL,
        "depth": 3,
        "mlp_hidden_dim": 16,
        "head_softmax": True,
        "grid": {"depth": [2, 3], "mlp_hidden_dim": [16, 32]},
    },
    # The same ~2k-parameter size with a modern recipe.
    "modern": {
        "patch_size": 4,
        "embed_dim": 8,
        "num_heads": 2,
        "depth": 3,
        "mlp_hidden_dim": 16,
        "normalize_input": True,
        "optimizer": "adamw",
        "weight_decay": 0.05,
        "lr_schedule": "cosine",
        "warmup_epochs": 1.0,
        "grid": {"depth": [2, 3], "mlp_hidden_dim": [16, 32]},
    },
    # The accuracy recipe (needs a GPU for its 60 epochs): a ViT from scratch, 4x4 patches, no
    # convolutional stem, ~1.6M parameters; on-device random affine augmentation, AdamW with
    # warmup + cosine, label smoothing, stochastic depth, an EMA of the weights, bf16 autocast.
    "strong": {
        "patch_size": 4,
        "embed_dim": 128,
        "num_heads": 4,
        "depth": 8,
        "mlp_hidden_dim": 512,
        "normalize_input": True,
        "drop_path_rate": 0.1,
        "optimizer": "adamw",
        "lr": 0.001,
        "weight_decay": 0.05,
        "lr_schedule": "cosine",
        "warmup_epochs": 5.0,
        "label_smoothing": 0.1,
        "epochs": 60,
        "batch_size": 256,
        "aug_degrees": 10.0,
        "aug_translate": 0.1,
        "aug_scale": 0.1,
        "ema_decay": 0.999,
        "amp": True,
        "compile": True,
        "grid": {"depth": [6, 8]},
    },
    # The strongest ViT that 2 CPU cores train in an hour: the strong recipe at ~1.8M parameters
    # (7x7 patches: 16 tokens), bfloat16 autocast, compiled. Its size, epochs, precision,
    # augmentation and prediction are what the `candidates` stage of params/laptop.yaml chose on a
    # validation split; the study refuses to go on otherwise.
    "laptop": {
        "patch_size": 7,
        "embed_dim": 192,
        "num_heads": 6,
        "depth": 6,
        "mlp_hidden_dim": 384,
        "normalize_input": True,
        "drop_path_rate": 0.05,
        "optimizer": "adamw",
        "lr": 0.001,
        "weight_decay": 0.05,
        "lr_schedule": "cosine",
        "warmup_epochs": 3.0,
        "label_smoothing": 0.1,
        "epochs": 70,
        "batch_size": 128,
        "aug_degrees": 10.0,
        "aug_translate": 0.1,
        "aug_scale": 0.1,
        "aug_elastic_alpha": 0.0,
        "ema_decay": 0.999,
        "amp": True,
        "compile": True,
        "test_shifts": 1,  # predict from each digit and its 4 copies shifted 1 px; training is unchanged
        "save_float16": True,  # 1.8M weights: 3.6 MB in float16; float32 would exceed the 5 MB limit (7.2 MB)
    },
}


def load_yaml(path: str | Path) -> dict:
    """Flat settings from a YAML file (an optional `preset` key plus any settings)."""
    path = readable_file(path, "settings file", "give a YAML file of `key: value` settings, e.g. params/seed.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(
            f"{path} is not valid YAML{at}: {problem}; fix the file (settings are `key: value` lines)"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file; give a YAML file of `key: value` settings") from None
    if data is None:
        raise ValueError(f"settings file {path} is empty. Fix: write `key: value` settings into it, or leave it out")
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings (`key: value` lines), got {type(data).__name__}")
    return _with_numbers(data)


def _with_numbers(value):
    """`value` with every string in scientific notation, at any depth, as its float."""
    if isinstance(value, dict):
        return {k: _with_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_numbers(v) for v in value]
    return as_number(value)


def build_config(
    preset: str = "seed", overrides: dict[str, Any] | None = None, yaml_path: str | Path | None = None
) -> ExperimentConfig:
    """preset -> YAML file -> overrides, validated. A YAML file may name its own `preset`."""
    settings = dict(load_yaml(yaml_path)) if yaml_path else {}
    if "study" in settings:
        raise ValueError(
            f"{yaml_path} is a profile (it declares a study), not a file of settings. Fix: run it with "
            f"`make report PROFILE={Path(yaml_path).stem}`, or give a file of `key: value` settings"
        )
    preset = settings.pop("preset", preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    settings = {**PRESETS[preset], **settings, **(overrides or {})}
    return ExperimentConfig().with_overrides(settings)
