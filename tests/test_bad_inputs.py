"""Every command × every kind of bad input: one line on stderr that names the file or setting,
exit status 2, no traceback, and nothing already saved lost or overwritten.

Each case is (command line, the text the error line must contain). `{ckpt}` is a checkpoint
trained once for these tests, `{png}` a digit image, `{tmp}` the case's own folder; the kinds of
bad file are made by `make_file`. "Unreadable" and "unwritable" cases drop to an unprivileged
user while the command runs, since root reads and writes anything.
"""

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT
from PIL import Image

from vitlib.cli import main

pytestmark = pytest.mark.mnist
QUICK = ["--data-root", DATA_ROOT, "--train-limit", "500", "--test-limit", "200", "--epochs", "1", "--no-progress"]
NOBODY = 65534


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real checkpoint, a digit image, a finished run and a finished selection to break."""
    root = tmp_path_factory.mktemp("good")
    assert main(["train", "--out", str(root / "run"), *QUICK]) == 0
    assert main(["select", "--out", str(root / "sel"), "--grid", "depth=1", "--folds", "2", *QUICK]) == 0
    digit = (torch.rand(28, 28) * 40).byte().numpy()
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(root / "digit.png")
    return root


def make_file(kind: str, like: Path, folder: Path) -> Path:
    """A bad stand-in for the file `like`, of `kind`."""
    path = folder / f"{kind}{like.suffix}"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
        return path
    data = {
        "empty": b"",
        "text": b"hello, this is not what you think\n",
        "truncated": like.read_bytes()[: like.stat().st_size // 2] if like.is_file() else b"",
        "image": (Path(__file__).parent / "data" / "digit.png").read_bytes()
        if (Path(__file__).parent / "data" / "digit.png").exists()
        else _png_bytes(),
        "unreadable": like.read_bytes() if like.is_file() else b"x",
    }[kind]
    path.write_bytes(data)
    if kind == "unreadable":
        path.chmod(0)
    return path


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def unprivileged(active: bool):
    """Run as the user nobody (effective uid), so that file permissions apply to root too."""
    if not active or os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def checkpoint_variant(kind: str, ckpt: Path, folder: Path) -> Path:
    """A checkpoint that loads as a file but not as this vitlib's model."""
    payload = torch.load(ckpt, weights_only=True)
    if kind == "newer-format":
        payload["format"] = 99
    elif kind == "unknown-setting":
        payload["config"]["model"]["rotary_embedding"] = True
    elif kind == "other-shape":
        payload["model"]["head.0.weight"] = torch.zeros(3, 3)
    elif kind == "no-weights":
        payload = {"epoch": 3}
    elif kind == "nan-weights":
        payload["model"]["head.0.weight"] = torch.full_like(payload["model"]["head.0.weight"], float("nan"))
    elif kind == "invalid-config":
        payload["config"]["model"]["num_heads"] = 3  # does not divide embed_dim
    path = folder / f"{kind}.pt"
    torch.save(payload, path)
    return path


FILE_KINDS = ["missing", "empty", "truncated", "text", "image", "directory", "unreadable"]
CHECKPOINT_KINDS = ["newer-format", "unknown-setting", "other-shape", "no-weights", "nan-weights", "invalid-config"]
YAML_CASES = {  # content -> what the error names
    "syntax": ("epochs: 2\nlr: [0.1\n", "is not valid YAML at line 3"),
    "wrong-type": ("batch_size: big\n", "batch_size must be of type int, got 'big'"),
    "unknown-key": ("epoch: 2\n", "'epoch' (did you mean 'epochs'?)"),
    "bad-value": ("lr: -1\n", "lr (learning rate) must be a positive number"),
    "not-a-mapping": ("- epochs\n- 2\n", "must hold a mapping of settings"),
    "grid-repeats-a-value": ("grid: {lr: [1e-5, 0.00001, 0.01]}\n", "grid['lr'] lists 1e-05 more than once"),
}


def cases():
    """(id, argv template, the bad path's kind, what the line must contain, unprivileged?)"""
    out = ["--out", "{tmp}/out"]
    # Checkpoint arguments of evaluate and predict.
    for command in ("evaluate", "predict"):
        extra = ["{png}"] if command == "predict" else ["--data-root", DATA_ROOT]
        for kind in FILE_KINDS:
            yield (f"{command}-checkpoint-{kind}", [command, "{bad:checkpoint}", *extra], kind, "checkpoint")
        for kind in CHECKPOINT_KINDS:
            expect = {
                "newer-format": "is in checkpoint format 99",
                "unknown-setting": "rotary_embedding",
                "other-shape": "weights do not fit",
                "no-weights": "has no model weights",
                "nan-weights": "holds weights that are not finite (NaN or infinity in head.0.weight)",
                "invalid-config": "holds an invalid model config",
            }[kind]
            yield (f"{command}-checkpoint-{kind}", [command, "{variant:" + kind + "}", *extra], None, expect)
    # Image arguments of predict.
    for kind in FILE_KINDS:
        if kind != "image":
            yield (f"predict-image-{kind}", ["predict", "{ckpt}", "{bad:image}"], kind, "image")
    yield ("predict-image-huge", ["predict", "{ckpt}", "{huge_png}"], None, "is too large to read safely")
    # --config of train and select, and --params of report: files of every kind, then bad YAML.
    for command, flag, rest in (
        ("train", "--config", [*out, *QUICK]),
        ("select", "--config", [*out, *QUICK]),
        ("report", "--params", ["--profile", "smoke"]),
    ):
        for kind in FILE_KINDS:
            if kind not in ("truncated",):
                yield (f"{command}-{flag[2:]}-{kind}", [command, flag, "{bad:yaml}", *rest], kind, "{bad}")
        for name, (_, expect) in YAML_CASES.items():
            yield (f"{command}-{flag[2:]}-yaml-{name}", [command, flag, "{yaml:" + name + "}", *rest], None, expect)
    # Output folders of train and select, and the data folder of every command that reads MNIST.
    for command in ("train", "select"):
        yield (f"{command}-out-is-a-file", [command, "--out", "{file}", *QUICK], None, "is a file, not a folder")
        yield (f"{command}-out-below-a-file", [command, "--out", "{file}/sub", *QUICK], None, "cannot be written")
        yield (
            f"{command}-out-unwritable",
            [command, "--out", "{locked}/sub", *QUICK],
            "unwritable",
            "cannot be written (Permission denied)",
        )
        yield (
            f"{command}-data-root-is-a-file",
            [command, *out, *QUICK, "--data-root", "{file}"],
            None,
            "is a file, not a folder",
        )
        yield (
            f"{command}-data-root-corrupt",
            [command, *out, *QUICK, "--data-root", "{corrupt}"],
            None,
            "is corrupt or partial",
        )
    yield (
        "train-out-holds-another-experiment",
        ["train", "--out", "{run}", *QUICK, "--lr", "0.001"],
        None,
        "holds a result of a different experiment: lr (0.005 there, 0.001 now)",
    )
    for name, content in (("config.json", "{}"), ("config.json", "[]"), ("metrics.json", "{}"), ("metrics.json", "[]")):
        yield (
            f"train-out-{name[:-5]}-hand-edited-{'object' if content == '{}' else 'list'}",
            ["train", "--out", "{run}", *QUICK],
            f"hand-edited:{name}={content}",
            f"run/{name} is not a run's {name} as vitlib writes it",
        )
    # Output folders are owned by the run that wrote them: nothing else is overwritten, and one
    # process at a time writes one.
    yield (
        "train-out-holds-a-checkpoint-it-did-not-write",
        ["train", "--out", "{foreign}", *QUICK],
        "foreign-checkpoint",
        "holds checkpoint.pt, which a training run does not write",
    )
    yield (
        "train-out-is-a-finished-selection",
        ["train", "--out", "{sel}", *QUICK],
        None,
        "holds selection.json, summary.csv, trials, trials.csv, which a training run does not write",
    )
    yield (
        "train-out-being-written-by-another-process",
        ["train", *out, *QUICK],
        "held-by-another-process",
        "is being written by another vitlib process (pid ",
    )
    yield (
        "select-out-being-written-by-another-process",
        ["select", *out, "--grid", "depth=1", "--folds", "2", *QUICK],
        "held-by-another-process",
        "is being written by another vitlib process (pid ",
    )
    # Resources running out: one line naming the folder or the settings.
    yield ("train-disk-full", ["train", *out, *QUICK], "disk-full", "no space left on the disk holding {tmp}/out")
    yield ("train-out-of-memory", ["train", *out, *QUICK], "out-of-memory", "out of memory training")
    yield (
        "select-out-holds-another-experiment",
        ["select", "--out", "{sel}", "--grid", "depth=1", "--folds", "2", *QUICK, "--epochs", "2"],
        None,
        "epochs (1 there, 2 now)",
    )
    yield (
        "select-out-holds-another-grid",
        ["select", "--out", "{sel}", "--grid", "depth=2", "--folds", "2", *QUICK],
        None,
        'holds a model selection over another grid ({"depth": [1]} there, {"depth": [2]} now)',
    )
    yield (
        "select-out-holds-a-training-run",
        ["select", "--out", "{run}", "--grid", "depth=1", *QUICK],
        None,
        "holds a training run (metrics.json), not a model selection",
    )
    yield (
        "select-out-holds-a-foreign-trial",
        ["select", "--out", "{sel}", "--grid", "depth=1", "--folds", "2", *QUICK],
        "foreign-trial",
        "is not a trial this program wrote",
    )
    yield ("select-grid-syntax", ["select", *out, "--grid", "depth", *QUICK], None, "--grid expects KEY=V1,V2")
    yield ("select-grid-unknown-key", ["select", *out, "--grid", "detph=1,2", *QUICK], None, "did you mean 'depth'")
    yield ("select-grid-bad-value", ["select", *out, "--grid", "depth=0,2", *QUICK], None, "depth")
    yield (
        "select-grid-repeated-value",
        ["select", *out, "--grid", "lr=0.00001,1e-5,0.01", *QUICK],
        None,
        "grid['lr'] lists 1e-05 more than once. Fix: list each value once",
    )
    yield (
        "select-grid-repeated-key",
        ["select", *out, "--grid", "depth=1", "--grid", "depth=2", *QUICK],
        None,
        "--grid gives depth twice. Fix: give all its values once",
    )
    for flag, value, expect in (  # every number setting in its range, NaN included, before any work
        ("--aug-scale", "nan", "aug_scale must be a number, got nan"),
        ("--seed", str(2**70), "seed must be a whole number from 0 to 2147483647"),
        ("--patch-size", "0", "patch_size must be a positive integer, got 0"),
        ("--num-heads", "0", "num_heads must be a positive integer, got 0"),
        ("--num-classes", "5", "num_classes=5, but the labels go up to 9. Fix: num_classes 10"),
    ) + (
        (("--device", "cuda", "torch finds no CUDA device on this machine"),) if not torch.cuda.is_available() else ()
    ):
        yield (f"train-{flag[2:]}-{value[:8]}", ["train", *out, *QUICK, flag, value], None, expect)
    yield (
        "train-config-is-a-profile",
        ["train", "--config", str(Path(__file__).parent.parent / "params" / "smoke.yaml"), *out, *QUICK],
        None,
        "is a profile (it declares a study), not a file of settings",
    )
    yield ("evaluate-data-root-corrupt", ["evaluate", "{ckpt}", "--data-root", "{corrupt}"], None, "is corrupt")
    yield ("data-root-is-a-file", ["data", "--root", "{file}"], None, "is a file, not a folder")
    yield ("data-root-corrupt", ["data", "--root", "{corrupt}"], None, "is corrupt or partial")
    yield ("data-root-unreadable-file", ["data", "--root", "{unreadable_data}"], "unreadable", "cannot be read")
    yield ("data-root-unwritable", ["data", "--root", "{locked}/data"], "unwritable", "cannot be written")
    yield ("report-unknown-profile", ["report", "--profile", "nope"], None, "no parameter profile 'nope'")
    yield (
        "report-render-only-before-running",
        ["report", "--profile", "smoke", "--render-only"],
        None,
        "executed notebooks missing",
    )
    yield ("report-folder-unwritable", ["report", "--profile", "smoke"], "unwritable", "cannot be written")
    yield ("check-report-unknown-profile", ["check-report", "--profile", "nope"], None, "no parameter profile 'nope'")
    yield (
        "check-report-nothing-committed",
        ["check-report", "--profile", "smoke"],
        None,
        "results file {root}/report/smoke/results.json does not exist",
    )
    yield ("promote-nothing-built", ["promote", "--profile", "smoke"], None, "nothing complete to promote")


CASES = list(cases())


@pytest.mark.parametrize("case_id,argv,kind,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case_id, argv, kind, expect, good, capsys, monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="vitlib-bad-"))
    folder.chmod(0o777)  # reachable by the unprivileged user too
    try:
        _check_case(argv, kind, expect, good, folder, capsys, monkeypatch)
    finally:
        for p in folder.rglob("*"):
            with contextlib.suppress(OSError):
                p.chmod(stat.S_IRWXU)
        shutil.rmtree(folder)


def _check_case(argv, kind, expect, good, folder, capsys, monkeypatch):
    shutil.copy(good / "digit.png", folder / "digit.png")  # where the unprivileged user can read it
    values = {
        "tmp": folder,
        "ckpt": folder / "run" / "checkpoint.pt",
        "png": folder / "digit.png",
        "run": folder / "run",
        "sel": folder / "sel",
        "file": folder / "a-file.txt",
        "locked": folder / "locked",
        "root": Path(__file__).resolve().parents[1],
        "corrupt": folder / "corrupt",
        "unreadable_data": folder / "unreadable-data",
        "foreign": folder / "foreign",
    }
    values["file"].write_text("a plain file\n")
    (folder / "locked").mkdir(mode=0o555)
    (folder / "locked").chmod(0o555)
    raw = Path(DATA_ROOT) / "MNIST" / "raw"
    for name, damage in (("corrupt", lambda b: b[:1000]), ("unreadable_data", None)):
        target = values[name] / "MNIST" / "raw"
        target.mkdir(parents=True)
        for f in raw.iterdir():
            (target / f.name).write_bytes(damage(f.read_bytes()) if damage else f.read_bytes())
            if not damage:
                (target / f.name).chmod(0)
    shutil.copytree(good / "run", folder / "run")
    shutil.copytree(good / "sel", folder / "sel")
    import papermill

    def no_notebooks(*args, **kwargs):
        raise AssertionError("the bad input was not noticed before the notebooks started")

    monkeypatch.setattr(papermill, "execute_notebook", no_notebooks)
    monkeypatch.setenv("VITLIB_BUILD_DIR", str(folder / ("locked" if kind == "unwritable" else "reports")))
    likes = {
        "checkpoint": values["ckpt"],
        "image": values["png"],
        "yaml": Path(__file__).parent.parent / "params" / "smoke.yaml",
    }
    args = []
    for a in argv:
        if a.startswith("{bad:"):
            what = a[5:-1]
            bad = make_file(kind, likes[what], folder)
            values["bad"] = bad
            args.append(str(bad))
        elif a.startswith("{variant:"):
            args.append(str(checkpoint_variant(a[9:-1], values["ckpt"], folder)))
        elif a == "{huge_png}":  # 20000 x 20000 pixels: past Pillow's guard against decompression bombs
            Image.new("L", (20000, 20000), 255).save(folder / "huge.png")
            args.append(str(folder / "huge.png"))
        elif a.startswith("{yaml:"):
            path = folder / "settings.yaml"
            path.write_text(YAML_CASES[a[6:-1]][0])
            args.append(str(path))
        else:
            args.append(a.format(**values))
    for name, value in values.items():
        expect = expect.replace("{" + name + "}", str(value))
    if kind == "foreign-checkpoint":
        (folder / "foreign").mkdir()
        shutil.copy(values["ckpt"], folder / "foreign" / "checkpoint.pt")
    if kind == "held-by-another-process":
        holder = _hold(folder / "out")
    if kind == "disk-full":
        import vitlib.experiment

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(vitlib.experiment, "save_checkpoint", full)
    if kind == "out-of-memory":
        import vitlib.experiment

        def no_memory(*args, **kwargs):
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1099511627776 bytes.")

        monkeypatch.setattr(vitlib.experiment, "fit", no_memory)
    if kind == "foreign-trial":
        next((folder / "sel" / "trials").glob("*.json")).write_text('{"an": "other program"}')
    if kind and kind.startswith("hand-edited:"):  # e.g. hand-edited:config.json={}
        name, content = kind.split(":", 1)[1].split("=", 1)
        (folder / "run" / name).write_text(content)
    saved = _snapshot(folder / "run") | _snapshot(folder / "sel") | _snapshot(folder / "foreign")
    capsys.readouterr()
    if kind in ("unreadable", "unwritable") and argv[0] in ("report", "check-report", "promote"):
        with unprivileged(True):
            readable = os.access(values["root"] / "params", os.R_OK | os.X_OK, effective_ids=True)
        if not readable:  # e.g. a clone inside `mktemp -d`'s 0700 folder: nobody cannot read the profiles
            pytest.skip("the user nobody cannot read this checkout's params/, which these commands read first")
    try:
        with unprivileged(kind in ("unreadable", "unwritable")):
            status = main(args)
    finally:
        if kind == "held-by-another-process":
            holder.kill()
            holder.wait()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"
    assert "Traceback" not in err
    assert _snapshot(folder / "run") | _snapshot(folder / "sel") | _snapshot(folder / "foreign") == saved, (
        "a saved result was changed"
    )


def _hold(out: Path) -> subprocess.Popen:
    """Another process holding `out` as a run does while it trains."""
    code = (
        "import sys, time; from vitlib.ownership import RUN_FILES, claim\n"
        "with claim(sys.argv[1], RUN_FILES, 'a training run'):\n"
        "    print('holding', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _snapshot(folder: Path) -> dict:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_command_is_covered():
    from vitlib.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    covered = {argv[0] for _, argv, _, _ in CASES}
    assert covered == set(commands), set(commands) - covered


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "evaluate", str(tmp_path / "absent.pt")])


def _limit_memory(gigabytes: int):
    """For a child process: at most `gigabytes` of address space, so that a large request fails."""
    import resource

    limit = gigabytes * 1024**3
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_memory_that_really_runs_out_is_one_line_and_the_folder_is_reusable(tmp_path):
    """Not a simulated failure: the allocator refuses the activations of a 1M-unit MLP layer under an
    address-space limit. One line names the settings to lower; rerun with a lower one, the same
    folder is taken (the failed attempt saved nothing in it)."""
    out = str(tmp_path / "run")
    model = ["--depth", "1", "--embed-dim", "16", "--num-heads", "2"]
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2"}  # few arenas: little address space
    command = [sys.executable, "-m", "vitlib", "train", "--out", out, *QUICK, *model, "--batch-size", "500"]
    failed = subprocess.run(
        [*command, "--mlp-hidden-dim", "1048576"], capture_output=True, text=True, env=env, preexec_fn=_limit_memory(16)
    )
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: out of memory") and "Fix: lower batch_size" in lines[0], lines[0]
    assert sorted(p.name for p in Path(out).iterdir() if p.name != ".vitlib.lock") == ["config.json"]

    rerun = subprocess.run([*command, "--mlp-hidden-dim", "32"], capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((Path(out) / "config.json").read_text())["model"]["mlp_hidden_dim"] == 32
    assert (Path(out) / "metrics.json").is_file()


def test_a_finished_run_is_read_back_not_retrained(good, tmp_path, capsys):
    shutil.copytree(good / "run", tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    assert main(["train", "--out", str(tmp_path / "run"), *QUICK]) == 0
    assert "already holds this run, finished" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_train"] == 500


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_in_a_real_process_too(tmp_path, content):
    """The same through `python -m vitlib`: exit status 2 and one line, for the shell and for make."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "vitlib", "evaluate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
