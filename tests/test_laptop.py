"""The laptop profile's study (params/laptop.yaml): the committed checkpoint, the rule that its
recipe is the one the validation split chose, and notebook 05 end to end on a slice of MNIST."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_ROOT

from vitlib import laptop, profiles, stages
from vitlib.config import PRESETS, ExperimentConfig, build_config
from vitlib.experiment import run_folder
from vitlib.paths import BUILD_ENV

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "laptop" / "checkpoint.pt"
RESULTS = ROOT / "report" / "laptop" / "results.json"
DEFAULTS = ExperimentConfig().flat()


@pytest.mark.mnist
@pytest.mark.slow
def test_the_committed_laptop_model_scores_at_least_99_5_percent():
    """`python -m vitlib evaluate checkpoints/laptop/checkpoint.pt` gives the committed test accuracy,
    >= 99.5% with the shifted copies its config asks for, and the digit alone's beside it (the
    report gives both; test_cli checks that `--single-view` gives that number)."""
    assert CHECKPOINT.is_file() and CHECKPOINT.stat().st_size < 5e6

    def evaluate():
        run = subprocess.run(
            [sys.executable, "-m", "vitlib", "evaluate", str(CHECKPOINT), "--data-root", DATA_ROOT, "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout)

    scored = evaluate()
    metrics = json.loads((CHECKPOINT.parent / "metrics.json").read_text())
    assert scored["n_test"] == 10_000 and scored["test_shifts"] == 1
    assert scored["test_accuracy"] == metrics["test_accuracy"] >= 0.995
    assert scored["test_accuracy_single_view"] == metrics["test_accuracy_single_view"]
    assert metrics["scored_on"] == "test" and metrics["n_train"] == 60_000
    assert metrics["train_seconds"] <= 3600  # the hour the recipe is sized for, on the machine that trained it


def test_the_committed_checkpoint_is_the_laptop_preset():
    config = json.loads((CHECKPOINT.parent / "config.json").read_text())
    flat = {k: v for section in config.values() for k, v in section.items()}
    flat = {**DEFAULTS, **flat}  # a setting added after it was trained counts at its default
    preset = build_config("laptop").flat()
    differ = {k: (flat[k], preset[k]) for k in preset if k != "data_root" and flat[k] != preset[k]}
    assert not differ, f"checkpoints/laptop was not trained with PRESETS['laptop']: {differ}"


def _reference(monkeypatch, tmp_path):
    """Build into a copy of the committed reference's saved runs, as `make report` starts."""
    monkeypatch.setenv(BUILD_ENV, str(tmp_path))
    shutil.copytree(ROOT / "report" / "laptop", tmp_path / "laptop", ignore=shutil.ignore_patterns("report.*"))


def _candidates() -> dict:
    return profiles.open_study("laptop").stages["candidates"].runs


def test_the_laptop_preset_is_the_candidate_the_validation_split_chose(monkeypatch, tmp_path):
    """The committed validation runs (report/laptop/candidates/) are the runs params/laptop.yaml
    declares (a run of other settings is refused on reading back), and they chose the preset's size,
    schedule, precision, augmentation and prediction."""
    _reference(monkeypatch, tmp_path)
    study = profiles.open_study("laptop")
    candidates = study.compare("candidates")
    assert list(candidates) == list(_candidates())
    for metrics in candidates.values():
        assert metrics["scored_on"] == "validation" and (metrics["n_train"], metrics["n_test"]) == (55_000, 5_000)
    study.check_final_is_chosen("candidates")
    chosen = stages.chosen(candidates)
    preset = build_config("laptop").flat()
    takes = study.stages["candidates"].final_takes
    assert {k: preset[k] for k in takes} == {k: _candidates()[chosen][k] for k in takes}
    if RESULTS.is_file():  # the report says the same
        assert json.loads(RESULTS.read_text())["numbers"]["laptop.chosen"]["value"] == chosen


def test_the_laptop_preset_predicts_as_the_committed_validation_runs_chose(monkeypatch, tmp_path):
    """Each candidate's committed validation results, the digit alone (test_correct.npy) and with
    shifted copies: the rule gives the preset's test_shifts, and a final model of other settings
    is refused with the fix."""
    _reference(monkeypatch, tmp_path)
    study = profiles.open_study("laptop")
    candidates, views = study.compare("candidates"), study.views("candidates")
    for name, m in candidates.items():
        assert len(m["test_correct"]) == len(views[name]["correct"]) == 5_000
        assert 1 - m["test_correct"].mean() == pytest.approx(m["test_error"])
    stage = study.stages["candidates"]
    assert stages.chosen_test_shifts(stage, candidates, views) == PRESETS["laptop"]["test_shifts"] == stage.test_shifts
    if RESULTS.is_file():  # the report says the same
        numbers = json.loads(RESULTS.read_text())["numbers"]
        assert numbers["laptop.test_shifts"]["value"] == PRESETS["laptop"]["test_shifts"]
        for name in candidates:
            assert numbers[f"candidate.val_error_shifted[{name}]"]["value"] == pytest.approx(views[name]["error"])
    monkeypatch.setitem(PRESETS["laptop"], "test_shifts", 0)  # the profile's own final model, predicting otherwise
    with pytest.raises(ValueError, match=r"has test_shifts 0 instead of 1. Fix: give params/laptop.yaml"):
        profiles.open_study("laptop").check_final_is_chosen("candidates")


def test_the_shifted_copies_are_chosen_only_when_they_lower_the_validation_error(tmp_path):
    stage = profiles.open_study("laptop").stages["candidates"]
    ours = next(n for n, c in stage.runs.items() if c["embed_dim"] == PRESETS["laptop"]["embed_dim"])
    for alone, shifted, chosen in ((0.0044, 0.0036, stage.test_shifts), (0.0044, 0.0044, 0), (0.0044, 0.0050, 0)):
        assert stages.chosen_test_shifts(stage, {ours: _fake(alone)}, {ours: {"error": shifted}}) == chosen


def test_scoring_the_shifted_copies_without_the_weights_says_how_to_get_them(monkeypatch, tmp_path):
    _reference(monkeypatch, tmp_path)
    study = profiles.open_study("laptop")
    shifted = next((tmp_path / "laptop" / "candidates").glob("*/correct_with_*px_shifts.npy"))
    shifted.unlink()
    with pytest.raises(FileNotFoundError, match=r"needs .*checkpoint.pt, which is not committed. Fix: move"):
        study.views("candidates")


def _fake(error: float) -> dict:
    return {"test_error": error}


def test_a_final_recipe_other_than_the_chosen_one_is_refused():
    stage = profiles.open_study("laptop").stages["candidates"]
    preset = build_config("laptop")
    ours = next(n for n, c in stage.runs.items() if all(preset.flat()[k] == c[k] for k in stage.final_takes))
    four = next(n for n in stage.runs if n.startswith("4×4"))
    configs = stages.run_configs(stage, preset, "laptop")
    assert stages.final_mismatch(stage, {four: _fake(0.006), ours: _fake(0.005)}, preset, configs) == {}
    differ = stages.final_mismatch(stage, {four: _fake(0.004), ours: _fake(0.005)}, preset, configs)
    assert differ["patch_size"] == (7, 4)
    flat = preset.flat()
    for change in ({"epochs": flat["epochs"] - 14}, {"amp": not flat["amp"]}, {"aug_elastic_alpha": 10.0}):
        other = build_config("laptop", change)
        differ = stages.final_mismatch(stage, {four: _fake(0.006), ours: _fake(0.005)}, other, configs)
        assert list(differ) == list(change)


def test_candidates_and_ingredients_use_the_validation_split_and_scale_with_the_profile(monkeypatch, tmp_path):
    study = profiles.open_study("laptop", epochs=PRESETS["laptop"]["epochs"] // 5, train_limit=1200)
    runs = study.stage_configs("candidates")
    assert [c.data.validation_size for c in runs.values()] == [1200 // 12] * len(runs)
    assert [c.train.epochs for c in runs.values()] == [_candidates()[n]["epochs"] // 5 for n in runs]
    assert {c.model.test_shifts for c in runs.values()} == {0} and not any(c.train.save_float16 for c in runs.values())
    stage = study.stages["candidates"]
    chosen = next(iter(stage.runs))
    rows = stages.run_configs(study.stages["ingredients"], study.config, study.preset, stage.runs[chosen])
    assert list(rows) == list(study.stages["ingredients"].runs)
    assert rows["without augmentation"].train.aug_degrees == 0 and rows["all ingredients"].train.aug_degrees > 0
    assert {c.train.epochs for c in rows.values()} == {15 // 5}
    assert {c.model.embed_dim for c in rows.values()} == {stage.runs[chosen]["embed_dim"]}


@pytest.mark.mnist
@pytest.mark.slow
def test_the_laptop_notebook_runs_end_to_end_on_a_slice(tmp_path):
    """Notebook 05 as `make report PROFILE=laptop` runs it, on 1,200 images for 1 epoch: a study of
    other numbers, so its final model goes to its own folder, not checkpoints/laptop."""
    params = tmp_path / "laptop-slice.yaml"
    params.write_text(
        "preset: laptop\nepochs: 1\ntrain_limit: 1200\ntest_limit: 400\ncompile: false\n"
        "n_jobs: 2\njoblib_backend: loky\n"
    )
    before = CHECKPOINT.stat().st_mtime if CHECKPOINT.is_file() else None
    args = ["report", "--profile", "laptop", "--params", str(params), "--no-pdf"]  # the smoke report makes a PDF
    run = subprocess.run(
        [sys.executable, "-m", "vitlib", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "VITLIB_BUILD_DIR": str(tmp_path / "report")},
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = next((tmp_path / "report").glob("laptop-*"))
    assert "[notebook 1/1] 05_laptop.ipynb" in run.stdout
    results = json.loads((out / "results.json").read_text())
    numbers = results["numbers"]
    assert numbers["final.n_train"]["value"] == 1200 and numbers["final.n_test"]["value"] == 400
    for name in _candidates():
        metrics = json.loads((out / "candidates" / f"{_folder(name)}" / "metrics.json").read_text())
        assert metrics["scored_on"] == "validation" and metrics["n_test"] == 100 and metrics["n_train"] == 1100
    assert len(list((out / "ingredients").glob("*/metrics.json"))) == len(
        profiles.open_study("laptop").stages["ingredients"].runs
    )
    assert (out / "final" / "checkpoint.pt").is_file()
    assert (CHECKPOINT.stat().st_mtime if CHECKPOINT.is_file() else None) == before
    page = (out / "report.html").read_text()
    for needle in ("The recipe", "Table 3. What each ingredient buys", "Figure 4.", "Confusion matrix"):
        assert needle in page
    assert "Traceback" not in page and str(tmp_path) not in page


def _folder(name: str) -> str:
    return run_folder(".", name).name


def test_every_test_score_seen_before_the_final_choice_is_listed(monkeypatch, tmp_path):
    """report/laptop/test_scores_seen.csv, committed beside the results: read into the report's
    timeline (each step's validation error looked up from the candidates, the final model last) and
    results.json; a study of other settings lists none."""
    from vitlib import laptop_tables

    _reference(monkeypatch, tmp_path)
    study = profiles.open_study("laptop")
    seen = laptop.test_scores_seen(study)
    assert len(seen) >= 1 and seen["trigger"].str.len().min() > 40 and seen["decision"].str.len().min() > 20
    final = json.loads((CHECKPOINT.parent / "metrics.json").read_text())
    assert final["test_accuracy_single_view"] in set(seen["test_accuracy"])  # the final model's first score
    candidates, views = study.compare("candidates"), study.views("candidates")
    chosen = stages.chosen(candidates)
    table = laptop_tables.seen_table(seen, candidates, views, chosen, final, number=5)
    assert table.caption.startswith("Table 5. The test scores seen before the final choice, in order")
    rows = table.df.to_dict("records")
    assert [r["step"] for r in rows] == [str(i) for i in range(1, len(seen) + 2)]
    for row, r in zip(seen.itertuples(), rows):
        expected = f"{candidates[row.candidate]['test_error']:.2%}" if row.candidate else "not scored on it"
        assert r["validation error"] == expected
    assert rows[-1]["test score seen"].startswith(f"{final['test_accuracy']:.2%}")
    assert rows[-1]["validation error"] == f"{views[chosen]['error']:.2%}"
    if RESULTS.is_file():
        numbers = json.loads(RESULTS.read_text())["numbers"]
        for row in seen.itertuples():
            assert numbers[f"seen.test_accuracy[{row.model}]"]["value"] == row.test_accuracy
    other = profiles.open_study("laptop", epochs=1)
    assert other.folder != "laptop" and laptop.test_scores_seen(other).empty
    assert laptop_tables.seen_table(laptop.test_scores_seen(other), {}, {}, "", final, number=5).data == ""
    (tmp_path / "bad.csv").write_text("model,accuracy\nx,0.9\n")
    with pytest.raises(ValueError, match="must have the columns model, candidate, trigger, test_accuracy"):
        laptop.test_scores_seen(profiles.open_study("laptop"), tmp_path / "bad.csv")
    # A from-scratch rebuild (nothing copied into its folder) reads the committed record too.
    monkeypatch.setenv(BUILD_ENV, str(tmp_path / "empty"))
    assert laptop.test_scores_seen(profiles.open_study("laptop")).equals(seen)


def test_the_candidates_text_weighs_the_margin_over_the_runner_up():
    """The chosen recipe against the next best on the same held-out digits (exact McNemar test):
    a one-digit margin is said to be within chance, a large one not."""
    from vitlib import laptop_report as report

    right = np.ones(5000, bool)
    a, b, c = right.copy(), right.copy(), right.copy()
    a[:22], b[1:24], c[:60] = False, False, False  # 22, 23 and 60 held-out digits wrong, mostly the same
    runs = {name: {"test_error": 1 - x.mean(), "test_correct": x, "n_test": 5000} for name, x in zip("abc", (a, b, c))}
    assert report.runner_up(runs, "a") == "b"
    close = report.candidates_text(runs, "a", 70, table=2, figure=1).data
    assert "2 are right only for the chosen recipe and 1 only for the runner-up, *b*" in close
    assert "within what chance gives on 5,000 digits" in close
    far = report.candidates_text({"a": runs["a"], "c": runs["c"]}, "a", 70, table=2, figure=1).data
    assert "38 are right only for the chosen recipe and 0 only for the runner-up" in far
    assert "unlikely to be chance" in far and "search went on" not in far
    assert "search went on" in report.candidates_text(runs, "a", 70, 2, 1, seen=3).data
    assert "reaches the lowest" in close and "ties" not in close
    d = right.copy()
    d[30:52] = False  # as many wrong as a, other digits: a tie, and the first listed is chosen
    tied = {"a": runs["a"], "d": {"test_error": 1 - d.mean(), "test_correct": d, "n_test": 5000}}
    text = report.candidates_text(tied, "a", 70, table=2, figure=1).data
    assert "*a* ties for the lowest validation error" in text and "on a tie the rule keeps" in text
    assert "lower error all the same" not in text and "runner-up" not in text
    assert "only for the other one at that error, *d*" in text


def test_on_a_tie_the_candidate_listed_first_is_chosen():
    names = list(_candidates())
    assert stages.chosen({name: _fake(0.0044) for name in names}) == names[0]
    assert stages.chosen({name: _fake(0.0044) for name in reversed(names)}) == names[-1]


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_a_fresh_clone_has_everything_the_laptop_report_reads_back():
    """The laptop report re-renders from committed files, not from hours of training: the validation
    runs' results and the wall time of the builds that trained them (timing.json, in Table 6).
    An ignored one would be missing from a fresh clone, and the rebuilt report would drop its numbers."""
    folder = ROOT / "report" / "laptop"
    runs = [
        p.relative_to(ROOT)
        for stage in ("candidates", "ingredients")
        for p in sorted((folder / stage).glob("*/*"))
        if p.name != "checkpoint.pt"  # the weights stay out (the final model's are in checkpoints/laptop)
    ]
    assert len(runs) > 30
    kept = [folder.relative_to(ROOT) / name for name in ("timing.json", laptop.SEEN)]
    needed = [str(p) for p in (*kept, *runs)]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *needed], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert ignored.split() == []
    timing = json.loads((folder / "timing.json").read_text())
    assert {"candidates_seconds", "ingredients_seconds"} <= set(timing)
