"""A build never touches the committed reference: `make report` writes build/<profile>/ and says
how its numbers compare with report/<profile>/; `promote` is the one way a build becomes the
reference."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vitlib import rebuild
from vitlib.build import copy_saved_runs, profile_parameters
from vitlib.paths import BUILD_ENV

ROOT = Path(__file__).resolve().parents[1]
CROSS_CPU = Path(__file__).parent / "data" / "cross_cpu"


def fingerprint(*paths: Path) -> dict:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.parametrize(
    "rebuilt,expect",
    [("seed-amd-epyc.json", ", 0 beyond it"), ("seed-lr0.001.json", "MOVED: selection.val_error[")],
)
def test_another_machines_rebuild_leaves_the_reference_and_readme_alone(rebuilt, expect, tmp_path, monkeypatch, capsys):
    """A seed build whose numbers moved as another CPU (or a changed setting) moves them: the summary
    says how they compare and where the report is; the committed files and the README test are unaffected."""
    from test_readme import test_readme_headline_equals_the_committed_results

    monkeypatch.setenv(BUILD_ENV, str(tmp_path))
    before = fingerprint(ROOT / "report", ROOT / "README.md")
    study = profile_parameters("seed", quiet=True)[1]
    study.out.mkdir(parents=True)
    shutil.copy(CROSS_CPU / rebuilt, study.out / "results.json")
    table = rebuild.summarize(study)
    said = capsys.readouterr().out
    machines = [
        json.loads(f.read_text())["built"]["machine"] for f in (ROOT / "report/seed/results.json", CROSS_CPU / rebuilt)
    ]
    assert ("another machine" in said) == (machines[0] != machines[1]) and expect in said, said
    assert f"Your report: not rendered; its numbers: {study.out / 'results.json'}" in said
    assert "make promote PROFILE=seed" in said
    assert len(table) == len(json.loads((ROOT / "report/seed/results.json").read_text())["numbers"])
    assert (study.out / "comparison.csv").read_text().count("\n") == len(table) + 1
    assert fingerprint(ROOT / "report", ROOT / "README.md") == before
    test_readme_headline_equals_the_committed_results()


def test_a_build_with_other_settings_is_not_compared(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(BUILD_ENV, str(tmp_path))
    params = tmp_path / "other.yaml"
    params.write_text("lr: 0.001\n")
    study = profile_parameters("seed", params, quiet=True)[1]
    assert study.out.parent == tmp_path and study.out.name.startswith("seed-")
    assert rebuild.summarize(study) is None
    assert "not compared with the committed reference" in capsys.readouterr().out


def test_a_build_starts_from_the_saved_runs_the_reference_commits(tmp_path):
    """The laptop reference commits its validation runs: a build copies them (not the rendered
    report), and never overwrites what the build already has."""
    reference, out = tmp_path / "report", tmp_path / "build"
    (reference / "candidates" / "a").mkdir(parents=True)
    (reference / "candidates" / "a" / "metrics.json").write_text("{}")
    (reference / "timing.json").write_text('{"x": 1}')
    for name in ("report.pdf", "report.html", "results.json"):
        (reference / name).write_text("the reference's")
    out.mkdir()
    (out / "timing.json").write_text('{"x": 2}')
    assert copy_saved_runs(reference, out) == 1
    assert (out / "candidates" / "a" / "metrics.json").is_file() and (out / "timing.json").read_text() == '{"x": 2}'
    assert not any((out / name).exists() for name in ("report.pdf", "report.html", "results.json"))


def test_promote_copies_a_complete_build_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv(BUILD_ENV, str(tmp_path / "build"))
    reference = tmp_path / "report" / "seed"
    monkeypatch.setattr(rebuild, "reference_dir", lambda profile: reference)
    build = tmp_path / "build" / "seed"
    (build / "candidates" / "a").mkdir(parents=True)
    (build / "report.html").write_text("html")
    (build / "results.json").write_text((CROSS_CPU / "seed-amd-epyc.json").read_text())
    with pytest.raises(FileNotFoundError, match="report.pdf: nothing complete to promote"):
        rebuild.promote("seed")
    assert not reference.exists()
    (build / "report.pdf").write_text("pdf")
    for name in ("metrics.json", "checkpoint.pt", "train.log"):
        (build / "candidates" / "a" / name).write_text(name)
    (reference / "candidates" / "a").mkdir(parents=True)  # a reference that keeps saved runs
    (reference / "candidates" / "a" / "metrics.json").write_text("an older run")
    (reference / "test_scores_seen.csv").write_text("the record, kept by hand")  # read there, never copied
    (build / "test_scores_seen.csv").write_text("a stale copy")
    copied = rebuild.promote("seed")
    assert (reference / "test_scores_seen.csv").read_text() == "the record, kept by hand"
    assert sorted(p.relative_to(reference).as_posix() for p in copied) == [
        "candidates/a/metrics.json",
        "report.html",
        "report.pdf",
        "results.json",
    ]
