"""The study a profile runs, stage by stage, and where each stage keeps its results.

A notebook opens its study (`open_study(profile, preset=..., lr=..., ...)`, its parameters passed
by name) and calls one stage per section. A build works in `build/<profile>/` (ignored by git; the committed reference is
`report/<profile>/`, see `vitlib.rebuild`). There (each file has one writer here and one reader):

    selection/             select() writes trials/, selection.json (+ CSVs); selection() reads it
    final/                 final() trains the selected config; final_model() and final() read it
    final_variants/<run>/  seeds_and_runner_up(): more seeds and the runner-up of selection
    ablation/<run>/        ablation(): the original with and without its head softmax, and modern,
                           each over N_SEEDS seeds
    timing.json            wall times of the stages; timing() reads them
    build.log              progress lines (`make report` shows them in the terminal)
    results.json           every number the report states: `vitlib.results_file` writes and reads it
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import findings
from .checkpoint import load_checkpoint
from .checks import reject_unknown
from .config import FIELD_SECTION, ExperimentConfig, build_config, load_yaml
from .data import MNIST
from .experiment import is_finished, load_data, load_run, run_folder, train_runs
from .results import result_settings, write_json
from .selection import SelectionResult, load_selection, select

NOTEBOOKS = ["01_model_selection.ipynb", "02_final_evaluation.ipynb", "03_understanding.ipynb", "04_findings.ipynb"]
# A profile of the `laptop` preset is a study of its own (vitlib.laptop), in one notebook.
LAPTOP_NOTEBOOKS = ["05_laptop.ipynb"]
# The reproduction and ablation: name -> preset (vitlib.config.PRESETS).
ABLATION = {
    "original (head softmax, as in the report)": "original",
    "original without the head softmax": "seed",
    "similar size, modern recipe": "modern",
}
# Settings that say how much data and how long, and how a run is executed: these carry over from
# the profile to the ablation's runs; everything else comes from each run's own preset.
CARRY_OVER = ("epochs", "train_limit", "test_limit", "validation_size", "seed", "device", "compile", "data_root")
N_SEEDS = 3  # seeds per configuration for the final model and for each ablation row
BATCH_ENV = "VITLIB_BATCH"  # set by `vitlib.build` while it executes the notebooks


def project_root() -> Path:
    """The checkout holding notebooks/ and pyproject.toml (from the notebook's folder or above)."""
    for folder in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]]:
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


BUILD_ENV = "VITLIB_BUILD_DIR"  # another folder for the builds than the project's build/ (tests use it)


def build_dir(profile: str) -> Path:
    """Where a build of the profile works and writes its report: build/<profile>/ (or under $VITLIB_BUILD_DIR)."""
    return Path(os.environ.get(BUILD_ENV) or project_root() / "build") / profile


def reference_dir(profile: str) -> Path:
    """The profile's committed reference: report/<profile>/ (a build never writes there)."""
    return project_root() / "report" / profile


@dataclass
class Study:
    profile: str
    preset: str
    config: ExperimentConfig
    folder: str = ""  # its folder under build/: the profile's name, or <profile>-<hash> for other numbers
    sources: dict = field(default_factory=dict)  # setting -> where its value came from, if not the preset

    @property
    def out(self) -> Path:
        return build_dir(self.folder or self.profile)

    @property
    def notebooks(self) -> list[str]:
        """The notebooks that run this study, in order (the last one gathers its findings)."""
        return LAPTOP_NOTEBOOKS if self.preset == "laptop" else NOTEBOOKS

    def load_data(self) -> MNIST:
        return load_data(self.config)

    def select(self, data: MNIST) -> SelectionResult:
        """k-fold selection, its trials kept in selection/trials/ (a rerun resumes)."""
        self.log(f"Model selection: {len(self.config.grid_points())} configs x {self.config.selection.folds} folds")
        start = time.perf_counter()
        result = select(self.config, data, self.out / "selection", progress=True, log=self.log)
        self.record_time(
            "selection_seconds",
            start,
            result.reused == len(result.trials),
            trials=len(result.trials),
            trials_reused=result.reused,
        )
        return result

    def selection(self) -> SelectionResult:
        """The finished model selection, read back."""
        try:
            return load_selection(self.out / "selection")
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err}: run notebooks/{NOTEBOOKS[0]} with profile {self.profile!r} first "
                f"(`make report PROFILE={self.profile}` runs all)"
            ) from None

    def final_config(self) -> ExperimentConfig:
        return self.config.with_overrides(self.selection().best)

    def final(self, data: MNIST) -> dict:
        """The selected config trained on all training images, tested after every epoch (read back
        if it is already there)."""
        self.log(f"Final model: {_point(self.selection().best)} on all {len(data.train_images):,} training images")
        return self.run_set({"final": self.final_config()}, self.out, data, "final_seconds")["final"]

    def final_model(self) -> torch.nn.Module:
        """The final model, from its checkpoint."""
        path = self.out / "final" / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: run notebooks/{NOTEBOOKS[1]} with profile "
                f"{self.profile!r} first (`make report PROFILE={self.profile}` runs all)."
            )
        return load_checkpoint(path)[0]

    def seed_run_configs(self) -> dict[str, ExperimentConfig]:
        """The selected config with the other seeds, and the runner-up of model selection."""
        final = self.final_config()
        base_seed = final.train.seed
        runs = {f"seed {base_seed + i}": final.with_overrides(seed=base_seed + i) for i in range(1, N_SEEDS)}
        runner_up = self.selection().runner_up()
        if runner_up is not None:
            runs["runner-up"] = self.config.with_overrides(runner_up)
        return runs

    def seeds_and_runner_up(self, data: MNIST | None = None) -> dict:
        """The final model and the runs of `seed_run_configs`, trained (with `data`) or read back."""
        runs = self.seed_run_configs()
        if data is not None:
            self.log(f"Seeds and runner-up: {len(runs)} more runs on all training images")
        first = load_run(self.out / "final")
        others = self.run_set(runs, self.out / "final_variants", data, "seeds_seconds")
        return {f"seed {self.final_config().train.seed} (the final model above)": first, **others}

    def ablation_configs(self) -> dict[str, ExperimentConfig]:
        """The original model with and without its head softmax, and with a modern recipe, at the
        original's chosen size (3 blocks, 16 MLP units) and with this profile's data and epochs."""
        carried = {k: v for k, v in self.config.flat().items() if k in CARRY_OVER}
        return {name: build_config(preset, carried) for name, preset in ABLATION.items()}

    def ablation_presets(self) -> list[str]:
        return list(ABLATION.values())

    def ablation(self, data: MNIST | None = None) -> dict[str, list[dict]]:
        """{row: [metrics of each seed]}: each ablation row over N_SEEDS seeds, trained or read back."""
        rows = self.ablation_configs()
        runs = {
            f"{row} · seed {cfg.train.seed + i}": cfg.with_overrides(seed=cfg.train.seed + i)
            for row, cfg in rows.items()
            for i in range(N_SEEDS)
        }
        if data is not None:
            self.log(f"Reproduction and ablation: {len(rows)} recipes x {N_SEEDS} seeds")
        done = self.run_set(runs, self.out / "ablation", data, "ablation_seconds")
        return {row: [done[name] for name in runs if name.startswith(f"{row} · ")] for row in rows}

    def run_set(self, runs: dict[str, ExperimentConfig], folder: Path, data: MNIST | None, timing_key: str) -> dict:
        """The one stage runner: named configurations -> their metrics. With `data`, each run is
        trained into folder/<name>/ (or read back where it is finished, in parallel as the profile
        says) and the stage's wall time kept under `timing_key`; without, all are read back."""
        if data is None:
            return {name: load_run(run_folder(folder, name)) for name in runs}
        start, reused = time.perf_counter(), all(is_finished(run_folder(folder, name)) for name in runs)
        sel = self.config.selection
        done = train_runs(runs, data, folder, sel.n_jobs, sel.joblib_backend, log=self.log)
        self.record_time(timing_key, start, reused)
        return done

    def log(self, line: str) -> None:
        """A progress line: into build.log, and into the notebook unless `vitlib.build` runs it
        (then the terminal shows build.log, and the rendered report stays free of log lines)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "build.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        if not os.environ.get(BATCH_ENV):
            print(line, flush=True)

    def write_findings(self) -> dict:
        """Gather every number of the finished study into results.json (the last stage)."""
        results = findings.gather(self)
        findings.save(results, self.out / "results.json")
        return results

    def record_time(self, key: str, start: float, reused: bool = False, **extra) -> None:
        """Record a stage's wall time; a stage whose results were all read back keeps the time of the
        build that computed them (a rebuild that only re-renders says how long the work took)."""
        self.out.mkdir(parents=True, exist_ok=True)
        timing = self.timing()
        if reused and key in timing:
            return
        write_json(self.out / "timing.json", {**timing, key: time.perf_counter() - start, **extra})

    def timing(self) -> dict:
        path = self.out / "timing.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def profiles() -> list[str]:
    """The parameter profiles: params/<name>.yaml."""
    return sorted(p.stem for p in (project_root() / "params").glob("*.yaml"))


def open_study(profile: str = "seed", preset: str | None = None, **settings) -> Study:
    """The study of a profile, validated: params/<profile>.yaml (read here, the one place it is
    read), then `preset` and the `settings` that are not None (a notebook's parameters cell,
    papermill's `-p`, or a build's parameter file). A notebook passes its parameters by name, so
    running it again in the same kernel gives the same study.

    A study whose settings would give other numbers than its profile's (a changed learning rate,
    say) keeps its results in build/<profile>-<hash>/, never in the profile's folder; settings
    that only say how it runs (workers, backend, data folder) do not count.
    """
    if not isinstance(profile, str) or not profile.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"profile must be a simple name (letters, digits, - or _), got {profile!r}")
    profile_file = project_root() / "params" / f"{profile}.yaml"
    if not profile_file.is_file():
        raise FileNotFoundError(
            f"no parameter profile {profile!r} (no {profile_file}). Fix: choose one of "
            f"{', '.join(profiles())}, or add params/{profile}.yaml"
        )
    reject_unknown(settings, set(FIELD_SECTION), "setting")
    from_file = load_yaml(profile_file)
    where = f"params/{profile}.yaml"
    file_preset = from_file.pop("preset", "seed")
    given = {k: v for k, v in settings.items() if v is not None}
    sources = {k: where for k in from_file} | {k: "notebook" for k, v in given.items() if from_file.get(k) != v}
    sources["preset"] = "notebook" if preset not in (None, file_preset) else where
    chosen = preset or file_preset
    config = _with_project_data_root(build_config(chosen, {**from_file, **given}))
    profile_config = _with_project_data_root(build_config(file_preset, from_file))
    ours, theirs = result_settings(config, "study"), result_settings(profile_config, "study")
    changed = sorted(k for section in ours for k in ours[section] if ours[section][k] != theirs[section][k])
    folder = profile
    if changed:
        digest = hashlib.sha1(json.dumps(ours, sort_keys=True).encode()).hexdigest()[:8]
        folder = f"{profile}-{digest}"
        print(
            f"These settings differ from {where} ({', '.join(changed)}), so they give other numbers: "
            f"results go to build/{folder}/, and build/{profile}/ is left as it is.",
            flush=True,
        )
    return Study(profile, chosen, config, folder, sources)


def _with_project_data_root(config: ExperimentConfig) -> ExperimentConfig:
    root = Path(config.data.data_root)
    if not root.is_absolute():  # relative to the project, wherever the notebook runs from
        config = config.with_overrides(data_root=str(project_root() / root))
    return config


def _point(point: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in point.items()) or "the preset's config"
