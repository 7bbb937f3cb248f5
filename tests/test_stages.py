"""A study declared by its profile (params/<profile>.yaml `study:`): stages parsed and checked,
their runs' configurations, and a new study made of a YAML file alone."""

import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from vitlib import profiles, stages
from vitlib.config import build_config, load_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_profile_declares_its_study_and_names_itself():
    for name in ("seed", "full", "smoke", "strong", "laptop"):
        assert load_yaml(ROOT / "params" / f"{name}.yaml")["profile"] == name  # for `papermill -f` alone
        study = profiles.open_study(name)
        assert study.notebooks and all((ROOT / "notebooks" / nb).is_file() for nb in study.notebooks)
        assert study.title.startswith("Vision Transformers on MNIST")
    assert profiles.open_study("seed").stages["ablation"].seeds == 3


def test_the_ablation_runs_each_preset_with_the_profiles_data_epochs_and_seed():
    """A run naming a preset starts from it and takes from the profile only how much data, how long,
    which seed and how it runs; with seeds, each run is trained with consecutive seeds."""
    study = profiles.open_study("smoke")
    configs = study.stage_configs("ablation")
    seeds = {run: declared.get("seeds", 3) for run, declared in study.stages["ablation"].runs.items()}
    assert seeds["original (head softmax, as in the report)"] > 3  # a run's own seeds replace the stage's
    assert list(configs) == [f"{run} · seed {s}" for run, n in seeds.items() for s in range(n)]
    first = study.configs_by_run("ablation")
    for run, cfg in first.items():
        preset = study.stages["ablation"].preset_of(run)
        expected = build_config(preset, {"epochs": 1, "train_limit": 1200, "test_limit": 400, "compile": False})
        assert cfg.with_overrides(data_root=expected.data.data_root) == expected
    assert first["original (head softmax, as in the report)"].model.head_softmax
    assert [c.train.seed for c in configs.values()][:3] == [0, 1, 2]


def _declare(stages_yaml: dict) -> dict[str, stages.Stage]:
    return stages.parse_stages(stages_yaml, "params/x.yaml")


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"a": {}}, r"stage 'a' must give `runs:`"),
        ({"a": {"runs": {"r": {"lr": 0.1}}, "sedes": 2}}, r"unknown key of .*'sedes' \(did you mean 'seeds'\?\)"),
        ({"a": {"runs": {"r": {"lrr": 0.1}}}}, r"unknown setting of .*run 'r'.*'lrr' \(did you mean 'lr'\?\)"),
        ({"a": {"runs": {"r": {"preset": "tiny"}}}}, r"run 'r': unknown preset 'tiny'"),
        ({"a": {"runs": {"r": None}}}, r"run 'r': give its settings as a mapping"),
        ({"a": {"runs": {"r": {}}, "validation": 1.5}}, r"validation must be a share .* \(e.g. 1/12\)"),
        ({"a": {"runs": {"r": {}}, "validation": "a third"}}, r"validation must be a share"),
        ({"a": {"runs": {"r": {}}, "seeds": 0}}, r"seeds must be a whole number of at least 1"),
        ({"a": {"runs": {"r": {}}, "start_from": "b"}}, r"starts from 'b', which is not a stage declared before it"),
        ({"a": {"runs": {"r": {}}, "final_takes": ["deph"]}}, r"final_takes .*'deph' \(did you mean 'depth'\?\)"),
        ({"a": {"runs": {"r": {}}, "test_shifts": -1}}, r"test_shifts must be a whole number of pixels, 0 or more"),
        ({"a": {"runs": {"r": {}}, "settings": [1]}}, r"`settings` must be a mapping"),
        ({"a": {"runs": {"r": {}}, "seeds": 2, "final_takes": ["depth"]}}, r"chooses a run .* so it takes one seed"),
        (
            {"a": {"runs": {"r": {}}, "seeds": 2}, "b": {"runs": {"s": {}}, "start_from": "a"}},
            r"stage 'a' chooses a run .* so it takes one seed",
        ),
    ],
)
def test_a_bad_stage_declaration_is_refused_with_the_fix(declared, message):
    with pytest.raises(ValueError, match=message):
        _declare(declared)


def test_a_validation_share_holds_out_that_share_of_the_images_used():
    (stage,) = _declare({"a": {"runs": {"r": {"epochs": 10}}, "validation": "1/12"}}).values()
    assert stage.validation == Fraction(1, 12)
    profile = build_config("seed", {"train_limit": 1200, "epochs": 5})
    (cfg,) = stages.run_configs(stage, profile, "seed").values()
    assert cfg.data.validation_size == 100
    assert cfg.train.epochs == 10  # the seed preset's own schedule: nothing to scale
    shortened = build_config("seed", {"epochs": 1})
    (cfg,) = stages.run_configs(stage, shortened, "seed").values()
    assert cfg.data.validation_size == 5000 and cfg.train.epochs == 2  # 10 epochs at a fifth of the schedule


def test_a_new_study_is_a_yaml_file(tmp_path, monkeypatch):
    """A profile of its own, with a stage no code names: opened, its runs configured, no Python added."""
    for folder in ("notebooks", "params"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "params" / "mine.yaml").write_text(
        "preset: seed\nepochs: 2\nstudy:\n  notebooks: [01_model_selection]\n  stages:\n"
        "    widths:\n      runs:\n        narrow: {embed_dim: 8}\n        wide: {embed_dim: 16, num_heads: 4}\n"
    )
    monkeypatch.chdir(tmp_path)
    study = profiles.open_study("mine")
    assert study.notebooks == ["01_model_selection.ipynb"]
    configs = study.stage_configs("widths")
    assert {n: c.model.embed_dim for n, c in configs.items()} == {"narrow": 8, "wide": 16}
    assert {c.train.epochs for c in configs.values()} == {2}
    with pytest.raises(KeyError, match=r"declares no stage 'ablation' \(declared: widths\). Fix: declare it"):
        study.stage_configs("ablation")
    (tmp_path / "params" / "bare.yaml").write_text("preset: seed\n")
    with pytest.raises(ValueError, match=r"params/bare.yaml must declare its study: `study:` with `notebooks"):
        profiles.open_study("bare")
    (tmp_path / "params" / "other.yaml").write_text("profile: mine\nstudy:\n  notebooks: [01_model_selection]\n")
    with pytest.raises(
        ValueError, match=r"params/other.yaml names profile 'mine'. Fix: make its `profile:` line say 'other'"
    ):
        profiles.open_study("other")
    (tmp_path / "params" / "typo.yaml").write_text("study:\n  notebooks: [01_model_selction]\n")
    with pytest.raises(ValueError, match="names notebooks that do not exist: 01_model_selction"):
        profiles.open_study("typo")
