import json
import subprocess
import sys

import pytest
from conftest import DATA_ROOT
from PIL import Image

from vitlib.cli import main

pytestmark = pytest.mark.mnist
QUICK = ["--data-root", DATA_ROOT, "--train-limit", "1000", "--test-limit", "300", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("command", ["data", "train", "select", "evaluate", "predict", "report"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: python -m vitlib " + command in capsys.readouterr().out


def test_train_evaluate_predict(tmp_path, mnist, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed", "--out", str(out), "--test-shifts", "1", *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["data"]["train_limit"] == 1000
    assert metrics["n_train"] == 1000 and len(metrics["history"]) == 1
    assert f"test accuracy {metrics['test_accuracy']:.2%}" in capsys.readouterr().out

    assert main(["evaluate", str(out / "checkpoint.pt"), "--data-root", DATA_ROOT, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n_test"] == 10000 and 0 <= scored["test_accuracy"] <= 1 and scored["test_shifts"] == 1
    # --single-view reads each digit alone: the number the shifted evaluation reports beside its own
    assert main(["evaluate", str(out / "checkpoint.pt"), "--data-root", DATA_ROOT, "--json", "--single-view"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["test_shifts"] == 0 and alone["test_accuracy"] == scored["test_accuracy_single_view"]

    digit = mnist.test_images[0, 0].numpy()
    path = tmp_path / "digit.png"
    Image.fromarray(255 - digit).resize((90, 90)).save(path)  # dark on light, 90x90
    assert main(["predict", str(out / "checkpoint.pt"), str(path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ") and "(probability 0." in line


def test_select_writes_resumable_results(tmp_path, capsys):
    out = tmp_path / "sel"
    args = ["select", "--out", str(out), "--grid", "depth=1,2", "--folds", "2", *QUICK]
    assert main(args) == 0
    assert "best: {'depth': " in capsys.readouterr().out
    assert len(list((out / "trials").glob("*.json"))) == 4
    assert main(args) == 0
    assert "Resuming: 4 of 4 trials" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--out", "x", "--preset", "nope"], "invalid choice: 'nope'"),
        (["train", "--out", "x", "--epoch", "1"], "unrecognized arguments: --epoch"),
        (["train", "--out", "x", "--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(args, message, capsys):
    """One line, not the command's whole usage first (dozens of lines for train)."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "--help` lists the options" in err


@pytest.mark.slow
def test_invalid_value_is_a_clear_error_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vitlib", "train", "--out", str(tmp_path), "--lr", "-1"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: lr (learning rate) must be a positive number, got -1.0"
    assert not (tmp_path / "checkpoint.pt").exists()
