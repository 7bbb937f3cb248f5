import json
import os
import stat

import pytest
import torch

from vitlib.checkpoint import load_checkpoint
from vitlib.config import build_config
from vitlib.experiment import load_run, train_runs
from vitlib.files import atomic_file
from vitlib.inference import evaluate, predict
from vitlib.results import write_json

BASE = {"embed_dim": 16, "num_heads": 2, "normalize_input": True, "epochs": 1, "depth": 1}


def test_runs_are_trained_once_and_read_back(tiny_data, tmp_path):
    runs = {"seed 0": build_config("modern", BASE), "seed 1": build_config("modern", {**BASE, "seed": 1})}
    first = train_runs(runs, tiny_data, tmp_path, log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-0", "seed-1"]
    assert (first["seed 0"]["test_correct"] != first["seed 1"]["test_correct"]).any()
    assert first["seed 0"]["test_correct"].mean() == pytest.approx(first["seed 0"]["test_accuracy"])
    said = []
    again = train_runs({k: v.with_overrides(n_jobs=2) for k, v in runs.items()}, tiny_data, tmp_path, log=said.append)
    assert said == [f"Reusing 2 finished run(s) from {tmp_path}: seed 0, seed 1"]
    assert again["seed 1"]["test_accuracy"] == first["seed 1"]["test_accuracy"]
    assert json.loads((tmp_path / "seed-1" / "config.json").read_text())["train"]["seed"] == 1
    assert load_run(tmp_path / "seed-1")["test_accuracy"] == first["seed 1"]["test_accuracy"]


def test_a_finished_run_of_another_experiment_is_refused_not_overwritten(tiny_data, tmp_path):
    train_runs({"a": build_config("modern", BASE)}, tiny_data, tmp_path, log=lambda *_: None)
    before = (tmp_path / "a" / "metrics.json").read_text()
    with pytest.raises(ValueError, match=r"different experiment: epochs \(1 there, 2 now\)"):
        train_runs({"a": build_config("modern", {**BASE, "epochs": 2})}, tiny_data, tmp_path, log=lambda *_: None)
    assert (tmp_path / "a" / "metrics.json").read_text() == before


def test_parallel_runs_give_the_numbers_of_serial_ones(tiny_data, tmp_path):
    runs = {f"seed {s}": build_config("modern", {**BASE, "seed": s}) for s in range(3)}
    serial = train_runs(runs, tiny_data, tmp_path / "serial", log=lambda *_: None)
    parallel = train_runs(runs, tiny_data, tmp_path / "parallel", n_jobs=2, backend="loky", log=lambda *_: None)
    for name in runs:
        assert parallel[name]["test_loss"] == pytest.approx(serial[name]["test_loss"], rel=1e-4)


def test_a_run_stopped_before_its_last_file_is_trained_again(tiny_data, tmp_path):
    """metrics.json is written last: without it, whatever else is there is not taken as finished."""
    cfg = {"a": build_config("modern", BASE)}
    train_runs(cfg, tiny_data, tmp_path, log=lambda *_: None)
    weights = load_checkpoint(tmp_path / "a" / "checkpoint.pt")[0].state_dict()
    (tmp_path / "a" / "metrics.json").unlink()  # as if killed while writing it
    (tmp_path / "a" / "metrics.json.k2x9.part").write_text('{"test_accura')
    said = []
    again = train_runs(cfg, tiny_data, tmp_path, log=said.append)
    assert not [line for line in said if "Reusing" in line]
    retrained = load_checkpoint(tmp_path / "a" / "checkpoint.pt")[0].state_dict()
    assert all(torch.equal(retrained[k], weights[k]) for k in weights)  # trained again, to the same weights
    assert again["a"]["n_train"] == len(tiny_data.train_images)


def test_a_write_stopped_halfway_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as f:
            f.write(b'{"a": 2, "b"')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"a": 1} and list(tmp_path.iterdir()) == [path]


def test_written_results_get_the_mode_of_any_new_file(tmp_path):
    # A results file others read (a shared folder, a web server for the report) must not be private
    # to its writer: it gets what `open` gives under the same umask.
    old = os.umask(0o022)  # a usual umask, under which a private file would differ (0600 vs 0644)
    try:
        reference = tmp_path / "plain.txt"
        reference.write_text("x")
        write_json(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == stat.S_IMODE(reference.stat().st_mode) == 0o644


def test_a_float16_checkpoint_is_half_the_file_and_scores_what_the_run_recorded(tiny_data, tmp_path):
    """save_float16 (the laptop model's, to stay under 5 MB): the file keeps float16 weights, the
    test was scored with exactly those, and the training itself is the float32 run's."""
    base = {**BASE, "embed_dim": 64, "mlp_hidden_dim": 128, "pos_embed": "sinusoidal"}  # a table the file omits
    runs = {"float32": build_config("modern", base), "float16": build_config("modern", {**base, "save_float16": True})}
    done = train_runs(runs, tiny_data, tmp_path, log=lambda *_: None)
    full, half = (tmp_path / name / "checkpoint.pt" for name in runs)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in done[n]["history"]] for n in runs]
    assert untimed[0] == untimed[1]  # rounded after training, not during
    payload = torch.load(half, weights_only=True)
    assert {v.dtype for v in payload["model"].values() if v.is_floating_point()} == {torch.float16}
    model, _ = load_checkpoint(half)
    assert next(model.parameters()).dtype == torch.float32
    right = (predict(model, tiny_data.test_images).argmax(1) == tiny_data.test_labels).numpy()
    assert (right == done["float16"]["test_correct"]).all()
    assert evaluate(model, tiny_data.test_images, tiny_data.test_labels)["loss"] == done["float16"]["test_loss"]
    assert done["float16"]["test_loss"] != done["float32"]["test_loss"]  # the rounding did happen


def test_test_shifts_score_the_averaged_prediction_and_keep_the_single_view(tiny_data, tmp_path):
    """A run with test_shifts: its test numbers are the averaged prediction's, the digit alone's come
    with them, and the per-epoch curves stay single-view (they cost one pass per epoch)."""
    done = train_runs({"s": build_config("modern", {**BASE, "test_shifts": 1})}, tiny_data, tmp_path, log=print)["s"]
    model, _ = load_checkpoint(tmp_path / "s" / "checkpoint.pt")
    x, y = tiny_data.test_images, tiny_data.test_labels
    averaged = predict(model, x).argmax(1)
    alone = predict(model, x, shifts=0).argmax(1)
    assert done["test_error"] == pytest.approx((averaged != y).float().mean().item())
    assert done["test_error_single_view"] == pytest.approx((alone != y).float().mean().item())
    assert (done["test_correct"] == (averaged == y).numpy()).all()
    assert done["history"][-1]["eval_error"] == done["test_error_single_view"]  # the curve: the digit alone
    assert not torch.allclose(predict(model, x), predict(model, x, shifts=0))  # the copies were used
