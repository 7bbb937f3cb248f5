"""The notebooks under papermill with the smoke profile, and the rendered report."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from vitlib import build
from vitlib.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.mnist


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_are_clean_and_thin(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():  # flat literals, one comment each
        assert re.match(r"^\w+ = .+  # .+$", line), line
    assert not any(re.search(r"^\s*(def|class) ", c.source, re.M) for c in code)
    # every setting a profile gives is declared, so papermill injects it without a warning
    declared = {line.split(" = ")[0] for line in tagged[0].source.splitlines()}
    for profile in (ROOT / "params").glob("*.yaml"):
        given = set(yaml.safe_load(profile.read_text()))
        assert given <= declared, f"{profile.name} sets {given - declared}, which {path.name} does not declare"


def test_notebooks_share_one_parameters_cell():
    cells = [next(c.source for c in nbformat.read(str(p), as_version=4).cells
                  if "parameters" in c.metadata.get("tags", [])) for p in NOTEBOOKS]
    assert cells[1:] == cells[:-1]
    assert "(0.005)" not in cells[0] and "None: the preset's value" in cells[0]  # true for every preset


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """`python -m vitlib report --profile smoke`, as `make report PROFILE=smoke` runs it."""
    out = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("VITLIB_REPORT_DIR", str(out))
    try:
        args = ["report", "--profile", "smoke"] + ([] if shutil.which("xelatex") else ["--no-pdf"])
        assert main(args) == 0
    finally:
        mp.undo()
    written = {"html": out / "smoke" / "report.html"}
    if shutil.which("xelatex"):
        written["pdf"] = out / "smoke" / "report.pdf"
    return out / "smoke", written


def test_notebooks_run_with_the_smoke_profile(smoke_report):
    out, _ = smoke_report
    best = json.loads((out / "selection" / "selection.json").read_text())["best"]
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    assert set(best) == set(smoke["grid"]) and best["depth"] in smoke["grid"]["depth"]
    assert metrics["n_train"] == smoke["train_limit"] and len(metrics["history"]) == smoke["epochs"]
    assert (out / "final" / "checkpoint.pt").is_file()
    for name in ("01_model_selection", "02_final_evaluation"):
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file()


def test_combined_report_has_figures_and_numbers_but_no_code(smoke_report):
    out, written = smoke_report
    page = written["html"].read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64', page)) >= 4
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.2%}" in page  # the prose quotes the measured accuracy
    assert "from_parameters(globals())" not in page  # code hidden
    for noise in ("Traceback", "Warning", "it/s]"):  # no warnings, errors or progress bars
        assert noise not in page
    with_code = (out / "01_model_selection.html").read_text()
    assert "from_parameters" in with_code


@pytest.mark.skipif(shutil.which("xelatex") is None, reason="xelatex not installed (make report says which packages)")
def test_pdf_is_made(smoke_report):
    out, written = smoke_report
    assert written["pdf"].read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):  # poppler-utils: read the text back
        text = subprocess.run(["pdftotext", "-layout", str(written["pdf"]), "-"], capture_output=True,
                              text=True, check=True).stdout
        metrics = json.loads((out / "final" / "metrics.json").read_text())
        assert f"{metrics['test_accuracy']:.2%}" in text and "Model selection" in text
        assert "\f" in text  # more than one page


def notebook_error(notebook: Path, parameters: dict, tmp_path, monkeypatch) -> str:
    """Run one notebook expecting it to fail; return papermill's error text."""
    monkeypatch.setenv("VITLIB_REPORT_DIR", str(tmp_path))
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), log_output=False, parameters=parameters,
                            progress_bar=False, cwd=str(ROOT / "notebooks"))
    return str(err.value)


def test_misspelled_parameter_stops_the_notebook_at_once(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[0], {"profile": "typo", "epoch": 1, "train_limit": 100}, tmp_path, monkeypatch)
    assert "unknown notebook parameter(s): 'epoch' (did you mean 'epochs'?)" in error
    assert not (tmp_path / "typo").exists()  # nothing ran


def test_invalid_value_fails_before_training(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[0], {"profile": "bad", "lr": -0.1}, tmp_path, monkeypatch)
    assert "lr (learning rate) must be a positive number" in error
    assert not (tmp_path / "bad").exists()


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(FileNotFoundError, match="profiles: full, seed, smoke, strong"):
        build.execute("nope")


def test_second_notebook_alone_says_to_run_the_first(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[1], {"profile": "lonely", "train_limit": 100, "test_limit": 50},
                           tmp_path, monkeypatch)
    assert "run notebooks/01_model_selection.ipynb with profile 'lonely' first" in error
