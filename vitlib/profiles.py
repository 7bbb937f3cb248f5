"""A parameter profile, read once: params/<profile>.yaml plus the settings a notebook or a build
passes by name, validated, into the `Study` they declare."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .checks import reject_unknown
from .config import FIELD_SECTION, ExperimentConfig, build_config, load_yaml
from .paths import BATCH_ENV, project_root
from .paths import profiles as profile_names
from .results import result_settings
from .stages import parse_stages
from .study import Study

STUDY_KEYS = {"title", "notebooks", "seeds", "final_model", "stages", "selection_variants"}


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
            f"{', '.join(profile_names())}, or add params/{profile}.yaml"
        )
    reject_unknown(settings, set(FIELD_SECTION), "setting")
    from_file = load_yaml(profile_file)
    where = f"params/{profile}.yaml"
    named = from_file.pop("profile", profile)  # a profile file names itself, for `papermill -f` alone
    if named != profile:
        raise ValueError(f"{where} names profile {named!r}. Fix: make its `profile:` line say {profile!r}")
    declared = _study_section(from_file.pop("study", None), where)
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
    study = Study(
        profile,
        chosen,
        config,
        folder,
        sources,
        notebooks=[f"{name}.ipynb" for name in declared["notebooks"]],
        stages=parse_stages(declared.get("stages", {}), where),
        selection_variants=_selection_variants(declared.get("selection_variants", {}), where),
        seeds=declared.get("seeds", 1),
        final_model_dir=declared.get("final_model", ""),
        title=declared.get("title", Study.title),
    )
    if not os.environ.get(BATCH_ENV):  # in a build, the report's settings table says this
        print(describe(study), flush=True)
    return study


def describe(study: Study) -> str:
    """One line for the top of a notebook: the profile, where each setting came from, where results go."""
    by_source: dict[str, list[str]] = {}
    for key, source in study.sources.items():
        if key != "preset":
            by_source.setdefault(source, []).append(key)
    said = "; ".join(
        f"from {source.replace('notebook', 'this notebook')}: {', '.join(keys)}" for source, keys in by_source.items()
    )
    return (
        f"Profile {study.profile!r}: preset {study.preset} ({study.sources.get('preset')})"
        + (f"; {said}" if said else "")
        + f"; every other setting the preset's. Results: build/{study.folder or study.profile}/"
    )


def _study_section(section, where: str) -> dict:
    """The profile's `study:` mapping, checked: which notebooks run it, and what they run."""
    if not isinstance(section, dict) or not section.get("notebooks"):
        raise ValueError(
            f"{where} must declare its study: `study:` with `notebooks: [...]` (the notebooks that run it, "
            "without .ipynb) and its `stages:`; see params/seed.yaml"
        )
    reject_unknown(section, STUDY_KEYS, f"key of `study:` in {where}")
    missing = [n for n in section["notebooks"] if not (project_root() / "notebooks" / f"{n}.ipynb").is_file()]
    if missing:
        raise ValueError(f"{where} names notebooks that do not exist: {', '.join(missing)} (look in notebooks/)")
    seeds = section.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"{where}: study seeds must be a whole number of at least 1, got {seeds!r}")
    return section


def _selection_variants(declared, where: str) -> dict[str, dict]:
    """{name: settings}: model selection run again over the same grid with these settings changed."""
    at = f"{where}: `selection_variants`"
    if not isinstance(declared, dict) or not all(isinstance(v, dict) and v for v in declared.values()):
        raise ValueError(
            f"{at} must map names to the settings they change, e.g. {{as written: {{head_softmax: true}}}}"
        )
    for name, settings in declared.items():
        reject_unknown(settings, set(FIELD_SECTION), f"setting of {at}, {name!r}")
    return dict(declared)


def _with_project_data_root(config: ExperimentConfig) -> ExperimentConfig:
    root = Path(config.data.data_root)
    if not root.is_absolute():  # relative to the project, wherever the notebook runs from
        config = config.with_overrides(data_root=str(project_root() / root))
    return config
