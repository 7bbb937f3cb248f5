"""JupyterLab in a real browser, as a student uses it: JupyterLab started as `make lab` starts it,
Chromium driven by Selenium. The start page is the README rendered; notebook 01 opens on the
project's kernel without being modified, runs all its cells twice with the smoke profile, and
gives the numbers a papermill run gives. Needs Debian's `chromium` and `chromium-driver` (nothing
is downloaded at test time); skipped with the reason where they are missing."""

import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from vitlib import lab
from vitlib.selection import load_selection

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.mnist,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="no browser: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab as `make lab` starts it (its command line, kernel and settings), serving a copy of
    the README and of notebook 01 set to the smoke profile, so that nothing committed is touched."""
    root = tmp_path_factory.mktemp("lab")
    builds = tmp_path_factory.mktemp("builds")
    shutil.copy(ROOT / "README.md", root / "README.md")
    (root / "notebooks").mkdir()
    nb = nbformat.read(str(ROOT / "notebooks" / "01_model_selection.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = re.sub(r'^profile = "seed"', 'profile = "smoke"', cell.source, flags=re.M)
    nbformat.write(nb, str(root / "notebooks" / "01.ipynb"))
    lab.install_kernel()
    lab.write_settings()
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        part.replace(str(lab.project_root()), str(root)) if part.startswith("--ServerApp.root_dir=") else part
        for part in lab.command(port=port, browser=False)
    ]
    log = (root.parent / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [*command, f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True"],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VITLIB_BUILD_DIR": str(builds)},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + Path(log.name).read_text()[-2000:])
    yield {"url": url, "token": token, "root": root, "builds": builds, "log": Path(log.name)}
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(600)  # Run All on a busy machine
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 60):
    """Poll a JavaScript expression until it is truthy; return its value. While the page is still
    loading (JupyterLab sets `window.jupyterapp` only once its plugins have started), a script error
    counts as not yet."""
    from selenium.common.exceptions import JavascriptException

    end, error = time.time() + timeout, None
    while time.time() < end:
        try:
            value = driver.execute_script(f"return {script}")
        except JavascriptException as exc:
            value, error = None, exc.msg
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for: {script}" + (f" (last error: {error})" if error else ""))


def test_the_start_page_is_the_readme_rendered(jupyterlab, browser):
    browser.get(f"{jupyterlab['url']}/lab/tree/README.md?reset&token={jupyterlab['token']}")
    current = "window.jupyterapp?.shell?.currentWidget"
    heading = _wait(browser, f"{current}?.node?.querySelector('.jp-RenderedMarkdown h1')?.textContent")
    assert heading.startswith("Vision Transformers on MNIST, reproducibly")
    assert browser.execute_script(f"return {current}.context.path") == "README.md"
    assert not browser.execute_script(f"return {current}.node.querySelector('.jp-FileEditor')")  # rendered, not source


def test_a_notebook_runs_twice_in_one_kernel_as_papermill_runs_it(jupyterlab, browser, tmp_path, monkeypatch):
    path = jupyterlab["root"] / "notebooks" / "01.ipynb"
    before = path.read_bytes()
    browser.get(f"{jupyterlab['url']}/lab/tree/notebooks/01.ipynb?reset&token={jupyterlab['token']}")
    current = "window.jupyterapp.shell.currentWidget"
    _wait(browser, "window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'", 120)
    kernel = browser.execute_script(f"return {current}.sessionContext.session.kernel.name")
    assert kernel == lab.KERNEL  # the project's kernel, as the notebook's metadata names it
    time.sleep(2)
    # JupyterLab writes the kernel's language_info into the notebook: the committed one is that of
    # the Python the project pins (environment.yml), so that opening the notebook changes nothing.
    if platform.python_version() == nbformat.read(str(path), as_version=4).metadata.language_info.version:
        assert not browser.execute_script(f"return {current}.model.dirty"), "opening the notebook modified it"
    assert path.read_bytes() == before

    for _ in range(2):  # Run All, then Run All again in the same kernel
        done = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.jupyterapp.commands.execute('notebook:run-all-cells').then(ok => done(ok), e => done(String(e)));"
        )
        assert done is True, done
        _wait(browser, f"{current}.sessionContext.session.kernel.status === 'idle'", timeout=300)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.jupyterapp.commands.execute('docmanager:save').then(() => done(true), e => done(String(e)));"
    )
    ran = nbformat.read(str(path), as_version=4)
    code = [c for c in ran.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], [o.get("evalue") for o in outputs]
    assert all(c.execution_count and c.execution_count > len(code) for c in code)  # the second run's
    shown = json.dumps([o.get("data", {}) for o in outputs])
    assert "Table 3. Model selection" in shown and "Figure 1." in shown

    # The same trials as papermill gives, into another build folder.
    import papermill as pm

    papermill_builds = tmp_path / "papermill"
    monkeypatch.setenv("VITLIB_BUILD_DIR", str(papermill_builds))
    pm.execute_notebook(
        str(ROOT / "notebooks" / "01_model_selection.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={"profile": "smoke"},
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    ours, theirs = (load_selection(b / "smoke" / "selection") for b in (jupyterlab["builds"], papermill_builds))
    assert ours.best == theirs.best and ours.trials["val_error"].tolist() == theirs.trials["val_error"].tolist()


def test_no_kernel_warning_in_the_terminal(jupyterlab):
    """Kernels over IPC sockets: no "running over TCP without encryption" at any kernel start. Starts
    a kernel of its own through the server's API, so that it holds whichever test ran before it."""
    api = f"{jupyterlab['url']}/api/kernels"
    headers = {"Authorization": f"token {jupyterlab['token']}", "Content-Type": "application/json"}
    started = urllib.request.Request(api, data=json.dumps({"name": lab.KERNEL}).encode(), headers=headers)
    kernel = json.load(urllib.request.urlopen(started, timeout=60))
    try:
        log = jupyterlab["log"]
        for _ in range(120):
            if "Kernel started" in log.read_text():
                break
            time.sleep(0.5)
        time.sleep(2)  # a warning would follow the start line
        text = log.read_text()
        assert "Kernel started" in text, text[-2000:]
        assert "without encryption" not in text and "Traceback" not in text, text[-2000:]
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{api}/{kernel['id']}", method="DELETE", headers=headers))


def test_make_lab_runs_this_command():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab: setup .*\n\t\$\(PY\) -m vitlib\.lab$", makefile, re.M)
    assert lab.command(browser=False)[-1] == "README.md" and sys.executable == lab.command()[0]
