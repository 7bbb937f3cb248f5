"""The notebooks under papermill with the smoke profile, and the rendered report."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from vitlib import build, profiles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


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
    # the study is opened with every parameter, by name: no globals() scan, nothing left unused
    declared = [line.split(" = ")[0] for line in tagged[0].source.splitlines()]
    (call,) = [m for c in code for m in re.findall(r"open_study\((.*?)\)  #", c.source, re.S)]
    passed = [a.strip().split("=")[0] for a in call.split(",") if a.strip()]
    assert passed == declared and all(f"{n}={n}" in call for n in declared[1:])
    assert not any("globals()" in c.source for c in code)
    # the project's kernel, and the language_info it reports (JupyterLab would otherwise add it on
    # opening the notebook, marking it modified), for the Python environment.yml pins
    assert nb.metadata.kernelspec.name == "vitlib"
    pinned = re.search(r"python=(\S+)", (ROOT / "environment.yml").read_text()).group(1)
    assert nb.metadata.language_info.version == pinned and nb.metadata.language_info.pygments_lexer == "ipython3"


def test_cell_ids_are_unique_across_the_notebooks():
    """The report combines the notebooks: a repeated id makes nbformat warn and invent random ones,
    so the HTML would change from build to build."""
    ids = [c["id"] for p in NOTEBOOKS for c in nbformat.read(str(p), as_version=4).cells]
    assert len(ids) == len(set(ids))


def test_notebooks_share_one_parameters_cell():
    cells = [
        next(c.source for c in nbformat.read(str(p), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        for p in NOTEBOOKS
    ]
    # the course report's study and the grid report; the laptop study's
    study_cells, laptop_cell = cells[:4] + cells[5:], cells[4]
    assert study_cells[1:] == study_cells[:-1]
    assert "(0.005)" not in cells[0] and "None: params/<profile>.yaml's, else the preset's" in cells[0]
    expected = [line for line in cells[0].splitlines() if not line.startswith(("grid =", "folds ="))]
    assert laptop_cell.splitlines() == [expected[0].replace('"seed"', '"laptop"'), *expected[1:]]


def runs_notebooks(test):
    """A test that executes notebooks: it needs MNIST and takes seconds or more."""
    return pytest.mark.mnist(pytest.mark.slow(test))


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """`python -m vitlib report --profile smoke` in a terminal, as `make report PROFILE=smoke` runs it."""
    out = tmp_path_factory.mktemp("report")
    args = ["report", "--profile", "smoke"] + ([] if shutil.which("xelatex") else ["--no-pdf"])
    run = subprocess.run(
        [sys.executable, "-m", "vitlib", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "VITLIB_BUILD_DIR": str(out)},
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    written = {"html": out / "smoke" / "report.html", "terminal": run.stdout + run.stderr}
    if shutil.which("xelatex"):
        written["pdf"] = out / "smoke" / "report.pdf"
    return out / "smoke", written


@runs_notebooks
def test_the_terminal_shows_progress_and_no_kernel_noise(smoke_report):
    out, written = smoke_report
    terminal = written["terminal"]
    for i, name in enumerate(profiles.open_study("seed").notebooks, start=1):
        assert f"[notebook {i}/4] {name}" in terminal
    assert re.search(r"\[4/4\] depth=2 fold 2: .* elapsed", terminal)  # each trial, with the time spent
    assert "[1/11] original (head softmax" in terminal
    assert "without encryption" not in terminal and "Traceback" not in terminal and "DuplicateCellId" not in terminal
    assert "Model selection: 2 configs x 2 folds" in (out / "build.log").read_text()
    # where the report is, and that smoke has no committed reference to compare with
    assert f"Your report: {out / 'report.pdf'} and {out / 'report.html'}" in terminal or not shutil.which("xelatex")
    assert "No committed reference for the smoke profile" in terminal


@runs_notebooks
def test_notebooks_run_with_the_smoke_profile(smoke_report):
    out, _ = smoke_report
    best = json.loads((out / "selection" / "selection.json").read_text())["best"]
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    assert set(best) == set(smoke["grid"]) and best["depth"] in smoke["grid"]["depth"]
    assert metrics["n_train"] == smoke["train_limit"] and len(metrics["history"]) == smoke["epochs"]
    assert (out / "final" / "checkpoint.pt").is_file()
    for name in ("01_model_selection", "02_final_evaluation", "03_understanding", "04_findings"):
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file()


@runs_notebooks
def test_combined_report_has_figures_and_numbers_but_no_code(smoke_report):
    out, written = smoke_report
    page = written["html"].read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64', page)) >= 9
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.2%}" in page  # the prose quotes the measured accuracy
    assert "open_study(" not in page  # code hidden
    for noise in ("Traceback", "Warning", "it/s]", "elapsed", "Reusing", "[1/", str(out), "/tmp/", "/home/"):
        assert noise not in page, noise  # no warnings, errors, progress or log lines, no absolute paths
    with_code = (out / "01_model_selection.html").read_text()
    assert "open_study" in with_code
    # Offline and accessible: nothing loaded from elsewhere, each figure described by its caption.
    for html_page in (page, with_code):
        assert "<script src=" not in html_page and "mathjax" not in html_page.lower()
    alts = re.findall(r'<img[^>]*\balt="([^"]*)"', page)
    assert alts and all(alt.startswith("Figure ") for alt in alts), alts


@runs_notebooks
def test_report_opens_with_its_findings_and_numbers_its_parts(smoke_report):
    out, written = smoke_report
    text = re.sub(r"<[^>]+>", " ", written["html"].read_text())
    assert text.index("Abstract.") < text.index("Answers.") < text.index("Table 1.") < text.index("1 Data")
    assert text.index("1 Data") < text.index("8 References") < text.index("Appendix A: how this run was made")
    sections = re.findall(
        r"\n\s*(\d) (?:Data|Method|Model selection|Final evaluation|Reproduction and ablation|"
        r"What the model looks at|Discussion|References)",
        text,
    )
    assert sections == [str(i) for i in range(1, 9)]
    for kind, count in (("Figure", 10), ("Table", 9)):
        first = [int(n) for n in re.findall(rf"{kind} (\d+)\.", text)]
        assert sorted(set(first)) == list(range(1, count + 1)), kind
        assert first == sorted(first), f"{kind}s out of order"


@runs_notebooks
def test_results_file_holds_the_numbers_the_report_states(smoke_report):
    out, written = smoke_report
    results = json.loads((out / "results.json").read_text())
    numbers = results["numbers"]
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert numbers["final.test_accuracy"]["value"] == metrics["test_accuracy"]
    # the double softmax row has its own, larger number of seeds (params/smoke.yaml)
    assert len([k for k in numbers if k.startswith("ablation.original.seed")]) == 5
    assert len([k for k in numbers if k.startswith("ablation.seed.seed")]) == 3
    # model selection as the course report ran it, with its head softmax, beside the fixed one
    variant = "selection_variant[as written (head softmax on)]"
    picked = numbers[f"{variant}.best"]["value"]
    assert picked in {
        k[len(variant) + len(".val_error[") : -1] for k in numbers if k.startswith(f"{variant}.val_error[")
    }
    page = written["html"].read_text()
    assert f"it picks <strong>{picked}</strong>" in page  # in the Answers on page 1
    for name in ("ablation.seed.mean", "seeds.test_accuracy.mean", "final.test_accuracy.ci_low"):
        assert f"{numbers[name]['value']:.2%}" in page, name
    assert results["built"]["machine"]["cores"] and results["built"]["machine"]["torch"]


@runs_notebooks
@pytest.mark.skipif(shutil.which("xelatex") is None, reason="xelatex not installed (make report says which packages)")
def test_pdf_is_made(smoke_report):
    out, written = smoke_report
    assert written["pdf"].read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):  # poppler-utils: read the text back
        text = subprocess.run(
            ["pdftotext", "-layout", str(written["pdf"]), "-"], capture_output=True, text=True, check=True
        ).stdout
        metrics = json.loads((out / "final" / "metrics.json").read_text())
        assert f"{metrics['test_accuracy']:.2%}" in text and "3 Model selection" in text
        assert "1 Data" in text and "1 1 Data" not in text  # numbered once, by the text
        assert "\f" in text  # more than one page


def notebook_error(notebook: Path, parameters: dict, tmp_path, monkeypatch) -> str:
    """Run one notebook expecting it to fail; return papermill's error text."""
    monkeypatch.setenv("VITLIB_BUILD_DIR", str(tmp_path))
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(notebook),
            str(tmp_path / "out.ipynb"),
            log_output=False,
            parameters=parameters,
            progress_bar=False,
            cwd=str(ROOT / "notebooks"),
        )
    return str(err.value)


@runs_notebooks
def test_an_unknown_profile_stops_the_notebook_with_the_list(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[0], {"profile": "smok"}, tmp_path, monkeypatch)
    assert "no parameter profile 'smok'" in error and "choose one of full, laptop, seed, smoke, strong" in error
    assert list(tmp_path.glob("smok*")) == []  # nothing ran


@runs_notebooks
def test_a_misspelled_setting_stops_the_build_before_any_notebook(tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("epoch: 1\n")
    with pytest.raises(ValueError, match="unknown setting\\(s\\): 'epoch' \\(did you mean 'epochs'\\?\\)"):
        build.execute("smoke", params)


def test_a_parameter_file_may_set_only_the_notebooks_parameters(tmp_path):
    """A setting the notebooks do not take would be dropped on the way: refused, with the fix."""
    params = tmp_path / "deeper.yaml"
    params.write_text("depth: 2\n")
    with pytest.raises(ValueError, match="sets depth, which notebooks/01_model_selection.ipynb does not take"):
        build.execute("smoke", params)


@runs_notebooks
def test_invalid_value_fails_before_training(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[0], {"profile": "smoke", "lr": -0.1}, tmp_path, monkeypatch)
    assert "lr (learning rate) must be a positive number" in error
    assert list(tmp_path.glob("smoke*")) == []


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(FileNotFoundError, match="choose one of full, laptop, seed, smoke, strong"):
        build.execute("nope")


@runs_notebooks
def test_second_notebook_alone_says_to_run_the_first(tmp_path, monkeypatch):
    error = notebook_error(NOTEBOOKS[1], {"profile": "smoke"}, tmp_path, monkeypatch)
    assert "run notebooks/01_model_selection.ipynb with profile 'smoke' first" in error


@runs_notebooks
def test_a_notebook_run_twice_in_one_kernel_gives_the_same_numbers(tmp_path, monkeypatch):
    """Run All twice in one JupyterLab kernel (nbclient): the second run, trained again from
    scratch in a kernel full of the first run's variables, gives the same trials."""
    from nbclient import NotebookClient

    from vitlib.selection import load_selection

    monkeypatch.setenv("VITLIB_BUILD_DIR", str(tmp_path))
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = re.sub(r'^profile = "seed"', 'profile = "smoke"', cell.source, flags=re.M)
    client = NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    trials = []
    with client.setup_kernel():
        for _ in range(2):
            for index, code in enumerate(nb.cells):
                client.execute_cell(code, index)
            trials.append(load_selection(tmp_path / "smoke" / "selection").trials)
            shutil.rmtree(tmp_path / "smoke")
    columns = ["depth", "fold", "train_loss", "train_error", "val_loss", "val_error"]
    pd.testing.assert_frame_equal(trials[0][columns], trials[1][columns], check_exact=True)


def _interrupt_when(proc: subprocess.Popen, ready, signal_number: int, timeout: float = 900) -> None:
    """Send `signal_number` to the build's whole process group (the kernel too, as a terminal's
    Ctrl-C or a killed session would) as soon as `ready()` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the build ended before it could be interrupted"
        assert time.monotonic() < deadline, "the build never reached the point to interrupt it at"
        time.sleep(0.2)
    os.killpg(proc.pid, signal_number)
    proc.wait(timeout=120)


def _wait_until_its_processes_end(marker: str, timeout: float = 60) -> None:
    """Jupyter starts kernels in a session of their own; a kernel whose build was killed notices
    and exits. Wait for every process of this build (found by its environment) to be gone."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker.encode() in environ.read_bytes().split(b"\0"):
                    alive.append(environ.parent.name)
            except OSError:
                continue
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes of the interrupted build still run: {alive}"
        time.sleep(0.5)


@runs_notebooks
def test_an_interrupted_build_resumes_to_the_same_numbers(smoke_report, tmp_path):
    """Killed during model selection, then stopped with Ctrl-C during the final runs, then run to
    the end: the finished trials and runs are picked up and every number equals an uninterrupted
    build's. Nothing half-written is taken for finished."""
    out, terminal = tmp_path / "smoke", tmp_path / "terminal.txt"
    marker = f"VITLIB_BUILD_DIR={tmp_path}"
    env = {**os.environ, "VITLIB_BUILD_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "vitlib", "report", "--profile", "smoke", "--no-pdf"]

    def start():
        # As in a terminal, Ctrl-C must reach the build: a shell running this suite in the background
        # ignores SIGINT, and an ignored signal stays ignored in every program started from it.
        with open(terminal, "w") as f:
            return subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=f,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    # The ablation's runs, finished as in the uninterrupted build: what is interrupted below is model
    # selection and the final model; reading back finished runs is the same code for every stage.
    shutil.copytree(smoke_report[0] / "ablation", out / "ablation")
    build_ = start()  # 1. killed (SIGKILL) once the first trial is saved
    _interrupt_when(build_, lambda: any((out / "selection" / "trials").glob("*.json")), signal.SIGKILL)
    _wait_until_its_processes_end(marker)
    assert not (out / "results.json").exists()
    build_ = start()  # 2. Ctrl-C once the first full-data run is saved
    _interrupt_when(build_, lambda: (out / "final" / "metrics.json").is_file(), signal.SIGINT)
    _wait_until_its_processes_end(marker)
    said = terminal.read_text()
    assert build_.returncode in (2, 130) and "Traceback" not in said, said[-2000:]
    assert not (out / "results.json").exists()
    build_ = start()  # 3. to the end
    build_.wait(timeout=1800)
    said = terminal.read_text()
    assert build_.returncode == 0, said[-3000:]
    assert "Resuming: " in (out / "build.log").read_text() or "Resuming: " in said
    assert "Final model: finished already" in (out / "build.log").read_text()
    from vitlib import findings
    from vitlib.compare import compare

    table, same_machine = compare(findings.load(smoke_report[0] / "results.json"), findings.load(out / "results.json"))
    assert same_machine and table["ok"].all(), table[~table["ok"]].to_string()


def _run_by_hand(notebook: Path, edits: dict, report_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    """Execute a notebook as JupyterLab would (nbclient, no papermill), after editing its
    parameters cell as a user would."""
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in edits.items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert n == 1, name
    monkeypatch.setenv("VITLIB_BUILD_DIR", str(report_dir))
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    return nb


@runs_notebooks
def test_a_notebook_run_by_hand_uses_its_profile_like_papermill(smoke_report, tmp_path, monkeypatch):
    """JupyterLab, nbconvert or nbclient: params/<profile>.yaml applies as under papermill, so the
    same trials come out, into the profile's folder."""
    from vitlib.selection import load_selection

    nb = _run_by_hand(NOTEBOOKS[0], {"profile": "smoke"}, tmp_path, monkeypatch)
    first = next(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert first.startswith("Profile 'smoke': preset seed (params/smoke.yaml); from params/smoke.yaml: grid")
    assert first.rstrip().endswith("Results: build/smoke/")
    columns = ["depth", "fold", "train_loss", "train_error", "val_loss", "val_error"]
    by_hand, batch = (load_selection(folder / "selection") for folder in (tmp_path / "smoke", smoke_report[0]))
    pd.testing.assert_frame_equal(by_hand.trials[columns], batch.trials[columns], check_exact=True)
    assert by_hand.best == batch.best
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]


@runs_notebooks
def test_the_grid_report_runs_on_a_small_grid(tmp_path, monkeypatch):
    """Notebook 06 (the full profile's report) on a two-setting grid of the smoke profile's data:
    every section, table and figure, its numbers in results.json, and no comparison with the seed
    report (other images)."""
    grid = {"depth": [1, 2], "lr": [0.005, 0.01]}
    nb = _run_by_hand(
        ROOT / "notebooks" / "06_grid_search.ipynb",
        {"profile": "smoke", "grid": grid, "n_jobs": 1},
        tmp_path,
        monkeypatch,
    )
    shown = "".join(
        o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    for n in range(1, 10):
        assert f"Table {n}." in shown
    assert "**Figure 1.**" in shown and "**Which settings matter.**" in shown and "seed report's pick" not in shown
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("smoke-")]
    numbers = json.loads((folder / "results.json").read_text())["numbers"]
    assert any(k.startswith("selection.interaction[") for k in numbers) and "final.test_accuracy" in numbers


@runs_notebooks
def test_a_notebook_with_a_changed_setting_keeps_its_results_apart(tmp_path, monkeypatch):
    (tmp_path / "smoke").mkdir()
    nb = _run_by_hand(NOTEBOOKS[0], {"profile": "smoke", "lr": 0.001, "n_jobs": 1}, tmp_path, monkeypatch)
    assert list((tmp_path / "smoke").iterdir()) == []  # the profile's folder is left alone
    (folder,) = [p for p in tmp_path.iterdir() if p.name != "smoke"]
    assert re.fullmatch(r"smoke-[0-9a-f]{8}", folder.name) and (folder / "selection" / "selection.json").is_file()
    said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"differ from params/smoke.yaml (lr), so they give other numbers: results go to build/{folder.name}/" in said
    assert f"from this notebook: lr, n_jobs; every other setting the preset's. Results: build/{folder.name}/" in said
    settings = json.loads((folder / "selection" / "selection.json").read_text())
    assert "0.001" in json.dumps(settings)


@runs_notebooks
def test_papermill_with_a_profile_file_alone_runs_that_profile(smoke_report, tmp_path, monkeypatch):
    """`papermill notebooks/01_model_selection.ipynb out.ipynb -f params/smoke.yaml`: the file names
    its profile, so the notebook runs it, into the profile's folder, with the batch build's numbers."""
    import papermill as pm

    from vitlib.config import load_yaml
    from vitlib.selection import load_selection

    monkeypatch.setenv("VITLIB_BUILD_DIR", str(tmp_path))
    pm.execute_notebook(
        str(NOTEBOOKS[0]),
        str(tmp_path / "out.ipynb"),
        parameters=load_yaml(ROOT / "params" / "smoke.yaml"),
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ipynb", "smoke"]
    ours, batch = (load_selection(folder / "selection") for folder in (tmp_path / "smoke", smoke_report[0]))
    assert ours.best == batch.best and ours.trials["val_error"].tolist() == batch.trials["val_error"].tolist()


def test_a_value_saved_in_a_parameters_cell_stops_the_build(tmp_path, monkeypatch):
    """JupyterLab autosaves an edited cell: `make report` would then run that notebook with it and the
    others without, and render a mixed report. The build stops before any notebook, naming the value
    and the fix."""
    for folder in ("notebooks", "params"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "pyproject.toml").write_text("")
    edited = tmp_path / "notebooks" / NOTEBOOKS[0].name
    nb = nbformat.read(str(edited), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = re.sub(r"^lr = None", "lr = 0.001", cell.source, flags=re.M)
    nbformat.write(nb, str(edited))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"has lr = 0.001 saved in its parameters cell.*Fix: `git checkout notebooks/"):
        build.profile_parameters("smoke", quiet=True)
    # Comments, and a value written over several lines, are read as Python reads them.
    cell.source = cell.source.replace("lr = 0.001", "# lr = 0.01 was too fast\nlr = None") + "\nseed = (\n    None\n)\n"
    nbformat.write(nb, str(edited))
    assert build.notebook_parameters(edited)["seed"] is None
    build.profile_parameters("smoke", quiet=True)
    # A profile file given as --params says what it is and how to run it.
    with pytest.raises(ValueError, match=r"is a profile .* Fix: run it as one, `make report PROFILE=laptop`"):
        build.profile_parameters("smoke", tmp_path / "params" / "laptop.yaml", quiet=True)
