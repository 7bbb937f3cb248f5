"""A profile's stages: named sets of configurations, declared in params/<profile>.yaml under
`study: stages:`, turned into the configurations they train. Pure functions: `vitlib.study`
trains and reads them back.

A stage declares (every key but `runs` optional):

    runs:         {name: {settings}}: each run's settings on top of the profile's configuration;
                  a run naming a `preset` starts from that preset instead, with the profile's
                  data, epochs, seed and device (CARRY_OVER); a run's own `seeds` replaces the
                  stage's for that run
    settings:     settings every run of the stage shares
    start_from:   another stage: the settings its chosen run declares come first (not that
                  stage's shared `settings`)
    seeds:        how many seeds each run is trained with (default 1)
    validation:   the share of the training images held out and scored instead of the test set
                  (e.g. 1/12), always the same images
    test_shifts:  also score each run's weights predicting from copies shifted by this many px
    final_takes:  settings the profile's final model must share with the run this stage chooses

Epochs a stage declares are at the profile preset's schedule; a profile that shortens it (a quick
test) shortens them in proportion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from .checks import reject_unknown
from .config import FIELD_SECTION, PRESETS, ExperimentConfig, build_config
from .data import LABEL_COUNTS

# What a run of another preset takes from the profile: how much data, how long, which seed, and
# how it is executed; everything else is its own preset's.
CARRY_OVER = ("epochs", "train_limit", "test_limit", "validation_size", "seed", "device", "compile", "data_root")
STAGE_KEYS = {"runs", "settings", "start_from", "seeds", "validation", "test_shifts", "final_takes"}


@dataclass(frozen=True)
class Stage:
    name: str
    runs: dict[str, dict]
    settings: dict = field(default_factory=dict)
    start_from: str | None = None
    seeds: int = 1
    validation: Fraction | None = None
    test_shifts: int = 0
    final_takes: tuple[str, ...] = ()

    def preset_of(self, run: str) -> str | None:
        return self.runs[run].get("preset")


def parse_stages(declared: dict, where: str) -> dict[str, Stage]:
    """{name: Stage} from a profile's `stages:` mapping, every key and setting checked."""
    if not isinstance(declared, dict):
        raise ValueError(f"{where}: `stages` must map stage names to their runs")
    stages: dict[str, Stage] = {}
    for name, spec in declared.items():
        at = f"{where}: stage {name!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
            raise ValueError(f"{at} must give `runs:`, a mapping of run names to their settings")
        reject_unknown(spec, STAGE_KEYS, f"key of {at}")
        if not isinstance(spec.get("settings", {}), dict) or not isinstance(spec.get("final_takes", []), list):
            raise ValueError(f"{at}: `settings` must be a mapping and `final_takes` a list of setting names")
        for run, settings in spec["runs"].items():
            if not isinstance(settings, dict):
                raise ValueError(f"{at}, run {run!r}: give its settings as a mapping ({{}} for none)")
            reject_unknown(settings, {*FIELD_SECTION, "preset", "seeds"}, f"setting of {at}, run {run!r}")
            _seeds(settings.get("seeds", 1), f"{at}, run {run!r}")
            if settings.get("preset", "seed") not in PRESETS:
                raise ValueError(
                    f"{at}, run {run!r}: unknown preset {settings['preset']!r}; valid: {', '.join(PRESETS)}"
                )
        reject_unknown(spec.get("settings", {}), set(FIELD_SECTION), f"setting of {at}")
        reject_unknown(dict.fromkeys(spec.get("final_takes", ())), set(FIELD_SECTION), f"final_takes of {at}")
        start = spec.get("start_from")
        if start is not None and start not in stages:
            raise ValueError(f"{at} starts from {start!r}, which is not a stage declared before it")
        seeds = _seeds(spec.get("seeds", 1), at)
        shifts = spec.get("test_shifts", 0)
        if not isinstance(shifts, int) or isinstance(shifts, bool) or shifts < 0:
            raise ValueError(f"{at}: test_shifts must be a whole number of pixels, 0 or more, got {shifts!r}")
        chooses = (
            shifts
            or spec.get("final_takes")
            or any(other.get("start_from") == name for other in declared.values() if isinstance(other, dict))
        )
        most = max([seeds] + [run.get("seeds", seeds) for run in spec["runs"].values()])
        if most > 1 and chooses:  # a choice is made on one run per name
            raise ValueError(f"{at} chooses a run (for the final model or another stage), so it takes one seed")
        stages[name] = Stage(
            name,
            dict(spec["runs"]),
            dict(spec.get("settings", {})),
            start,
            seeds,
            _share(spec["validation"], at) if "validation" in spec else None,
            shifts,
            tuple(spec.get("final_takes", ())),
        )
    return stages


def _seeds(value, at: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{at}: seeds must be a whole number of at least 1, got {value!r}")
    return value


def _share(value, at: str) -> Fraction:
    try:
        share = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        share = Fraction(-1)
    if not 0 < share < 1:
        raise ValueError(f"{at}: validation must be a share of the training images between 0 and 1 (e.g. 1/12)")
    return share


def run_configs(
    stage: Stage, profile: ExperimentConfig, preset: str, chosen_settings: dict | None = None
) -> dict[str, ExperimentConfig]:
    """{run name: its configuration}; with seeds > 1, "<run> · seed <n>" for each seed.
    `chosen_settings`: the declared settings of the run that `stage.start_from` chose."""
    scale = profile.train.epochs / build_config(preset).train.epochs
    carried = {k: v for k, v in profile.flat().items() if k in CARRY_OVER}
    configs = {}
    for run, declared in stage.runs.items():
        settings = {**(chosen_settings or {}), **stage.settings, **declared}
        run_preset = settings.pop("preset", None)
        seeds = settings.pop("seeds", stage.seeds)
        if "epochs" in settings:
            settings["epochs"] = max(1, round(settings["epochs"] * scale))
        if stage.validation is not None:
            n_train = min(profile.data.train_limit or sum(LABEL_COUNTS["train"]), sum(LABEL_COUNTS["train"]))
            settings["validation_size"] = int(n_train * stage.validation)
        cfg = build_config(run_preset, {**carried, **settings}) if run_preset else profile.with_overrides(settings)
        if seeds == 1:
            configs[run] = cfg
        for i in range(seeds if seeds > 1 else 0):
            configs[f"{run} · seed {cfg.train.seed + i}"] = cfg.with_overrides(seed=cfg.train.seed + i)
    return configs


def by_run(stage: Stage, done: dict[str, dict]) -> dict[str, list[dict]]:
    """{run: [metrics of each seed]} from the stage's results by run name."""
    return {run: [m for name, m in done.items() if name == run or name.startswith(f"{run} · ")] for run in stage.runs}


def chosen(done: dict[str, dict]) -> str:
    """The run with the lowest validation (or test) error; the first listed on a tie."""
    return min(done, key=lambda name: done[name]["test_error"])


def chosen_test_shifts(stage: Stage, done: dict[str, dict], views: dict[str, dict]) -> int:
    """The stage's test_shifts if the shifted copies lower its chosen run's error, else 0."""
    name = chosen(done)
    return stage.test_shifts if views[name]["error"] < done[name]["test_error"] else 0


def final_mismatch(
    stage: Stage, done: dict[str, dict], final: ExperimentConfig, configs: dict[str, ExperimentConfig]
) -> dict[str, tuple]:
    """{setting: (the final model's, the chosen run's)} for each of `final_takes` that differs;
    `configs`: the stage's run configurations (its epochs scaled as the profile's)."""
    theirs, ours = configs[chosen(done)].flat(), final.flat()
    return {k: (ours[k], theirs[k]) for k in stage.final_takes if ours[k] != theirs[k]}
