"""The study a profile runs, stage by stage, and where each stage keeps its results.

A notebook validates its parameters into a `Study` (`from_parameters(globals())`) and calls one
stage per section. Under `report/<profile>/` (each file has one writer here and one reader):

    selection/             select() writes trials/, selection.json (+ CSVs); selection() reads it
    final/                 final() trains the selected config; final_model() and final() read it
    final_variants/<run>/  seeds_and_runner_up(): more seeds and the runner-up of selection
    ablation/<run>/        ablation(): the original with and without its head softmax, and modern
    timing.json            wall times of the stages; timing() reads them
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checks import reject_unknown
from .config import FIELD_SECTION, ExperimentConfig, build_config
from .data import MNIST
from .experiment import load_data, load_run, train_runs
from .results import write_json
from .selection import SelectionResult, load_selection, select
from .train import load_checkpoint

NOTEBOOKS = ["01_model_selection.ipynb", "02_final_evaluation.ipynb", "03_understanding.ipynb"]
# The reproduction and ablation: name -> preset (vitlib.config.PRESETS).
ABLATION = {"original (head softmax, as in the report)": "original",
            "original without the head softmax": "seed",
            "same size, modern recipe": "modern"}
NOTEBOOK_NAMES = {"profile", "preset"}  # notebook parameters that are not experiment settings
# Settings that say how much data and how long, and how a run is executed: these carry over from
# the profile to the ablation's runs; everything else comes from each run's own preset.
CARRY_OVER = ("epochs", "train_limit", "test_limit", "seed", "device", "compile", "data_root")
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def project_root() -> Path:
    """The checkout holding notebooks/ and pyproject.toml (from the notebook's folder or above)."""
    for folder in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]]:
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


def results_dir(profile: str) -> Path:
    """report/<profile>/, or <$VITLIB_REPORT_DIR>/<profile>/ when that is set (tests use it)."""
    return Path(os.environ.get("VITLIB_REPORT_DIR") or project_root() / "report") / profile


@dataclass
class Study:
    profile: str
    preset: str
    config: ExperimentConfig
    started: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return results_dir(self.profile)

    def load_data(self) -> MNIST:
        return load_data(self.config)

    def select(self, data: MNIST) -> SelectionResult:
        """k-fold selection, its trials kept in selection/trials/ (a rerun resumes)."""
        result = select(self.config, data, self.out / "selection", progress=True, log=_print_flush)
        self._save_timing("selection_seconds", trials=len(result.trials), trials_reused=result.reused)
        return result

    def selection(self) -> SelectionResult:
        """The finished model selection, read back."""
        try:
            return load_selection(self.out / "selection")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}: run notebooks/{NOTEBOOKS[0]} with profile {self.profile!r} first "
                                    f"(`make report PROFILE={self.profile}` runs all)") from None

    def final_config(self) -> ExperimentConfig:
        return self.config.with_overrides(self.selection().best)

    def final(self, data: MNIST) -> dict:
        """The selected config trained on all training images, tested after every epoch (read back
        if it is already there)."""
        metrics = self._runs({"final": self.final_config()}, data, self.out)["final"]
        self._save_timing("final_seconds")
        return metrics

    def final_model(self) -> torch.nn.Module:
        """The final model, from its checkpoint."""
        path = self.out / "final" / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run notebooks/{NOTEBOOKS[1]} with profile "
                                    f"{self.profile!r} first (`make report PROFILE={self.profile}` runs all).")
        return load_checkpoint(path)[0]

    def seeds_and_runner_up(self, data: MNIST, n_seeds: int = 3) -> dict:
        """The selected config with more seeds, and the runner-up, each on all training images."""
        final = self.final_config()
        base_seed = final.train.seed
        runs = {f"seed {base_seed + i}": final.with_overrides(seed=base_seed + i) for i in range(1, n_seeds)}
        runner_up = self.selection().runner_up()
        if runner_up is not None:
            runs["runner-up"] = self.config.with_overrides(runner_up)
        first = load_run(self.out / "final")
        return {f"seed {base_seed} (the final model above)": first,
                **self._runs(runs, data, self.out / "final_variants")}

    def ablation_configs(self) -> dict[str, ExperimentConfig]:
        """The original model with and without its head softmax, and with a modern recipe, at the
        original's chosen size (3 blocks, 16 MLP units) and with this profile's data and epochs."""
        carried = {k: v for k, v in self.config.flat().items() if k in CARRY_OVER}
        return {name: build_config(preset, carried) for name, preset in ABLATION.items()}

    def ablation(self, data: MNIST) -> dict:
        return self._runs(self.ablation_configs(), data, self.out / "ablation")

    def _runs(self, runs: dict, data: MNIST, out_dir: Path) -> dict:
        sel = self.config.selection
        return train_runs(runs, data, out_dir, sel.n_jobs, sel.joblib_backend, log=_print_flush)

    def _save_timing(self, key: str, **extra) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "timing.json", {**self.timing(), key: time.perf_counter() - self.started, **extra})

    def timing(self) -> dict:
        path = self.out / "timing.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def from_parameters(namespace: dict) -> Study:
    """Validate a notebook's parameters (its globals after papermill's injection) into a study.

    papermill only warns about parameters a notebook does not declare; here any variable that is
    neither a notebook parameter nor an experiment setting stops the notebook at once.
    """
    params = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in _IPYTHON_NAMES and not callable(v)
              and type(v).__name__ != "module"}
    reject_unknown(params, NOTEBOOK_NAMES | set(FIELD_SECTION), "notebook parameter")
    profile, preset = params.pop("profile", "seed"), params.pop("preset", "seed")
    if not isinstance(profile, str) or not profile.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"profile must be a simple name (letters, digits, - or _), got {profile!r}")
    config = build_config(preset, {k: v for k, v in params.items() if v is not None})
    root = Path(config.data.data_root)
    if not root.is_absolute():  # relative to the project, wherever the notebook runs from
        config = config.with_overrides(data_root=str(project_root() / root))
    return Study(profile, preset, config)


def _print_flush(*args):
    print(*args, flush=True)
