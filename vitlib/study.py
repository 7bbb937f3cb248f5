"""The study a profile runs, stage by stage, and where each stage keeps its results.

params/<profile>.yaml declares it: the configuration (a preset and settings) and, under `study:`,
the notebooks that run it, the seeds of the final model, where a committed final model lives, and
its stages (`vitlib.stages`). A notebook opens its study (`open_study(profile, lr=..., ...)`, its
parameters passed by name) and calls one stage per section. A build works in build/<profile>/
(ignored by git; the committed reference is report/<profile>/, see `vitlib.rebuild`). There, each
file has one writer here and one reader:

    selection/             select() writes trials/, selection.json (+ CSVs); selection() reads it
    selection_variants/<name>/
                           select_variants(): the same selection with some settings changed
    final/                 final() trains the selected config (or reads it back); final_model()
    final_variants/<run>/  seeds_and_runner_up(): more seeds and the runner-up of selection
    <stage>/<run>/         compare(stage): each run of a declared stage, trained or read back
    <stage>/<run>/correct_with_<n>px_shifts.npy
                           views(stage): the run's weights scored again with shifted copies
    timing.json            wall times of the stages; timing() reads them
    build.log              progress lines (`make report` shows them in the terminal)
    results.json           every number the report states: `vitlib.findings` writes and reads it
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import stages
from .checkpoint import load_checkpoint
from .config import ExperimentConfig
from .data import MNIST
from .experiment import finished_run, is_finished, load_data, run_folder, train_runs
from .inference import evaluate
from .paths import BATCH_ENV, build_dir, project_root
from .results import write_json, write_npy
from .selection import SelectionResult, load_selection, select


@dataclass
class Study:
    profile: str
    preset: str
    config: ExperimentConfig
    folder: str = ""  # its folder under build/: the profile's name, or <profile>-<hash> for other numbers
    sources: dict = field(default_factory=dict)  # setting -> where its value came from, if not the preset
    notebooks: list[str] = field(default_factory=list)  # the notebooks that run it, in order
    stages: dict[str, stages.Stage] = field(default_factory=dict)
    selection_variants: dict[str, dict] = field(default_factory=dict)  # name -> settings it changes
    seeds: int = 1  # seeds of the final model (the others in final_variants/)
    final_model_dir: str = ""  # a committed final model (relative to the project) that the profile's own build reads
    title: str = "Vision Transformers on MNIST"  # the rendered report's

    @property
    def out(self) -> Path:
        return build_dir(self.folder or self.profile)

    @property
    def is_profiles_own(self) -> bool:
        """Whether these are the profile's own numbers (not a study of other settings)."""
        return self.folder in ("", self.profile)

    def load_data(self) -> MNIST:
        return load_data(self.config)

    # Model selection, the final model, its seeds and the runner-up.

    def select(self, data: MNIST) -> SelectionResult:
        """k-fold selection, its trials kept in selection/trials/ (a rerun resumes)."""
        self.log(f"Model selection: {len(self.config.grid_points())} configs x {self.config.selection.folds} folds")
        start = time.perf_counter()
        result = select(self.config, data, self.out / "selection", progress=True, log=self.log)
        done = result.reused == len(result.trials)
        self.record_time("selection_seconds", start, done, trials=len(result.trials), trials_reused=result.reused)
        return result

    def selection(self) -> SelectionResult:
        """The finished model selection, read back."""
        try:
            return load_selection(self.out / "selection")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}: {self._run_first(self.notebooks[0])}") from None

    def select_variants(self, data: MNIST | None = None) -> dict[str, SelectionResult]:
        """{name: model selection over the same grid with the variant's settings}, run with `data`
        (a rerun resumes) or read back without."""
        out = {}
        for name, settings in self.selection_variants.items():
            folder = run_folder(self.out / "selection_variants", name)
            if data is None:
                out[name] = load_selection(folder)
                continue
            self.log(
                f"Model selection, {name}: {len(self.config.grid_points())} configs x {self.config.selection.folds} folds"
            )
            start = time.perf_counter()
            result = select(self.config.with_overrides(settings), data, folder, progress=True, log=self.log)
            self.record_time("selection_variants_seconds", start, result.reused == len(result.trials))
            out[name] = result
        return out

    def final_config(self) -> ExperimentConfig:
        """The profile's configuration, with the point model selection chose if it has a grid."""
        return self.config.with_overrides(self.selection().best) if self.config.selection.grid else self.config

    def final_dir(self) -> Path:
        """final/ in the build; the committed model's folder for the profile's own build in build/."""
        own_build = self.out.resolve() == (project_root() / "build" / self.profile).resolve()
        if self.final_model_dir and own_build and self.is_profiles_own:
            return project_root() / self.final_model_dir
        return self.out / "final"

    def final_label(self) -> str:
        """The final model's folder as a report names it, relative to the project."""
        folder = self.final_dir()
        return self.final_model_dir if folder != self.out / "final" else f"build/{self.folder or self.profile}/final"

    def final(self, data: MNIST | None = None) -> dict:
        """The final configuration trained on all training images, tested after every epoch (read
        back if it is already there; only read back without `data`)."""
        folder, cfg = self.final_dir(), self.final_config()
        metrics = finished_run(folder, cfg)
        if metrics is not None:
            if data is not None:
                self.log(f"Final model: finished already in {folder}, read back")
            return metrics
        if data is None:
            raise FileNotFoundError(f"{folder} holds no finished final model: {self._run_first('the notebooks')}")
        if folder != self.out / "final":  # the committed model is written by hand, never by a build
            raise FileNotFoundError(
                f"{folder} holds no finished run of these settings. Fix: `git checkout {self.final_model_dir}`, "
                f"or train it there on purpose: python -m vitlib train --preset {self.preset} --out {self.final_model_dir}"
            )
        point = ", ".join(f"{k} = {v}" for k, v in self.selection().best.items()) if cfg is not self.config else ""
        self.log(f"Final model: {point or 'the profile config'} on all {len(data.train_images):,} training images")
        return self.run_set({folder.name: cfg}, folder.parent, data, "final_seconds")[folder.name]

    def final_model(self) -> torch.nn.Module:
        """The final model, from its checkpoint."""
        path = self.final_dir() / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {self._run_first(self.notebooks[-1])}")
        return load_checkpoint(path)[0]

    def seed_run_configs(self) -> dict[str, ExperimentConfig]:
        """The selected config with the other seeds, and the runner-up of model selection."""
        final = self.final_config()
        base_seed = final.train.seed
        runs = {f"seed {base_seed + i}": final.with_overrides(seed=base_seed + i) for i in range(1, self.seeds)}
        runner_up = self.selection().runner_up()
        if runner_up is not None:
            runs["runner-up"] = self.config.with_overrides(runner_up)
        return runs

    def seeds_and_runner_up(self, data: MNIST | None = None) -> dict:
        """The final model and the runs of `seed_run_configs`, trained (with `data`) or read back."""
        runs = self.seed_run_configs()
        if data is not None:
            self.log(f"Seeds and runner-up: {len(runs)} more runs on all training images")
        first = self.final()
        others = self.run_set(runs, self.out / "final_variants", data, "seeds_seconds")
        return {f"seed {self.final_config().train.seed} (the final model above)": first, **others}

    # The declared stages.

    def stage(self, name: str) -> stages.Stage:
        """A declared stage, or a KeyError naming the ones the profile declares."""
        if name not in self.stages:
            declared = ", ".join(self.stages) or "none"
            raise KeyError(
                f"profile {self.profile!r} declares no stage {name!r} (declared: {declared}). Fix: declare it "
                f"under `study: stages:` in params/{self.profile}.yaml (params/seed.yaml has an example)"
            )
        return self.stages[name]

    def stage_configs(self, name: str) -> dict[str, ExperimentConfig]:
        """{run: configuration} of a declared stage."""
        stage = self.stage(name)
        chosen = None
        if stage.start_from:
            before = self.stages[stage.start_from]
            chosen = before.runs[stages.chosen(self.compare(stage.start_from))]
        return stages.run_configs(stage, self.config, self.preset, chosen)

    def compare(self, name: str, data: MNIST | None = None) -> dict[str, dict]:
        """{run: metrics} of a declared stage, read back where finished (a run of other settings in
        its folder is refused), the rest trained with `data` into <stage>/<run>/."""
        configs, folder = self.stage_configs(name), self.out / name
        found = {run: finished_run(run_folder(folder, run), cfg) for run, cfg in configs.items()}
        if all(m is not None for m in found.values()):
            return found
        if data is None:
            missing = next(run for run, m in found.items() if m is None)
            raise FileNotFoundError(f"stage {name!r} has not run {missing!r}: {self._run_first('the notebooks')}")
        stage = self.stage(name)
        self.log(f"{name.capitalize()}: {len(configs)} runs" + (" on the validation split" if stage.validation else ""))
        # Every run of a stage is scored on the same images: the validation split of the first.
        scored = load_data(next(iter(configs.values()))) if stage.validation else data
        return self.run_set(configs, folder, scored, f"{name}_seconds")

    def configs_by_run(self, name: str) -> dict[str, ExperimentConfig]:
        """{run: its configuration (its first seed's)} of a declared stage."""
        return {run: cfgs[0] for run, cfgs in stages.by_run(self.stage(name), self.stage_configs(name)).items()}

    def compare_by_run(self, name: str, data: MNIST | None = None) -> dict[str, list[dict]]:
        """{run: [metrics of each seed]} of a declared stage."""
        return stages.by_run(self.stage(name), self.compare(name, data))

    def views(self, name: str) -> dict[str, dict]:
        """{run: {"correct": a bool per scored digit, "error"}}: each run's weights predicting from
        the digit and its copies shifted by the stage's test_shifts px, read back from the run's
        folder, or scored there from its checkpoint."""
        shifts, folder = self.stage(name).test_shifts, self.out / name
        out = {}
        for run, cfg in self.stage_configs(name).items():
            path = run_folder(folder, run) / f"correct_with_{shifts}px_shifts.npy"
            if not path.is_file():
                self._score_shifted(run, cfg, path, shifts)
            correct = np.load(path)
            out[run] = {"correct": correct, "error": float((~correct).mean())}
        return out

    def _score_shifted(self, run: str, cfg: ExperimentConfig, path: Path, shifts: int) -> None:
        checkpoint = path.parent / "checkpoint.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"{path} is missing, and scoring it needs {checkpoint}, which is not committed. Fix: move "
                f"{path.parent} away and run the study again (`make report PROFILE={self.profile}`): it "
                f"retrains {run!r} and scores it both ways"
            )
        self.log(f"Test views: {run}, with {shifts} px shifted copies")
        scored_on = load_data(cfg)
        scored = evaluate(
            load_checkpoint(checkpoint)[0], scored_on.test_images, scored_on.test_labels, shifts=shifts, per_image=True
        )
        write_npy(path, scored["correct"].numpy())

    def check_final_is_chosen(self, name: str) -> None:
        """The final model must have what stage `name` chose (its final_takes, and its test_shifts
        if the stage scores them): refuse to go on otherwise. A study of other settings may rank the
        runs otherwise; its final model keeps the profile's settings."""
        stage, done = self.stage(name), self.compare(name)
        differ = stages.final_mismatch(stage, done, self.config, self.stage_configs(name))
        if stage.test_shifts:
            shifts = stages.chosen_test_shifts(stage, done, self.views(name))
            if shifts != self.config.model.test_shifts:
                differ["test_shifts"] = (self.config.model.test_shifts, shifts)
        if differ and not self.is_profiles_own:
            self.log(f"Stage {name} chose {stages.chosen(done)!r}; the final model keeps the profile's settings")
        elif differ:
            said = ", ".join(f"{k} {a!r} instead of {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"stage {name!r} chose {stages.chosen(done)!r}, but this study's final model has {said}. "
                f"Fix: give params/{self.profile}.yaml (or its preset) the chosen settings"
            )

    # Running, logging and timing.

    def run_set(self, runs: dict[str, ExperimentConfig], folder: Path, data: MNIST | None, timing_key: str) -> dict:
        """The one stage runner: named configurations -> their metrics. With `data`, each run is
        trained into folder/<name>/ (or read back where it is finished, in parallel as the profile
        says) and the stage's wall time kept under `timing_key`; without, all are read back."""
        if data is None:  # read back, each checked against the settings asked for
            done = {name: finished_run(run_folder(folder, name), cfg) for name, cfg in runs.items()}
            missing = [name for name, m in done.items() if m is None]
            if missing:
                raise FileNotFoundError(
                    f"{folder} has no finished run {missing[0]!r}: {self._run_first('the notebooks')}"
                )
            return done
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

    def _run_first(self, notebook: str) -> str:
        where = f"notebooks/{notebook}" if notebook.endswith(".ipynb") else notebook
        return f"run {where} with profile {self.profile!r} first (`make report PROFILE={self.profile}` runs all)"
