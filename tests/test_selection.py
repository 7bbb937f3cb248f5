import json

import pandas as pd
import pytest

import vitlib.selection as selection
from vitlib.config import build_config
from vitlib.data import kfold_splits
from vitlib.selection import load_selection, select

FAST = {"embed_dim": 16, "num_heads": 2, "normalize_input": True, "epochs": 2, "batch_size": 64}


def grid_config(**extra):
    return build_config("modern", {**FAST, "grid": {"depth": [1, 2], "mlp_hidden_dim": [16, 32]}, "folds": 3, **extra})


def test_summary_against_hand_computed_numbers():
    trials = pd.DataFrame(
        {
            "depth": [2, 2, 2, 1, 1, 1],
            "fold": [1, 2, 3, 1, 2, 3],
            "status": ["ok"] * 5 + ["failed"],
            "train_loss": [1.0, 2.0, 3.0, 0.5, 0.5, float("nan")],
            "train_error": [0.1] * 6,
            "val_loss": [1.0] * 6,
            "val_error": [0.10, 0.20, 0.60, 0.30, 0.50, float("nan")],
            "seconds": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    summary = selection.summarize(trials, ["depth"])
    assert summary["depth"].tolist() == [2, 1]  # the grid's order, not sorted
    assert summary["val_error_mean"].tolist() == pytest.approx([0.30, 0.40])
    assert summary["val_error_std"].tolist() == pytest.approx([0.264575131, 0.141421356])  # sample std (n - 1)
    assert summary["train_loss_mean"].tolist() == pytest.approx([2.0, 0.5])
    assert summary["folds"].tolist() == [3, 3] and summary["failed_folds"].tolist() == [0, 1]


def test_selection_writes_what_it_chose_and_reads_it_back(tiny_data, tmp_path):
    result = select(grid_config(), tiny_data, tmp_path, progress=False)
    assert len(result.trials) == 12
    assert list(result.trials[["depth", "mlp_hidden_dim", "fold"]].itertuples(index=False, name=None))[:4] == [
        (1, 16, 1),
        (1, 16, 2),
        (1, 16, 3),
        (1, 32, 1),
    ]
    assert set(result.trials["status"]) == {"ok"}
    errors = result.summary.set_index(["depth", "mlp_hidden_dim"])["val_error_mean"]
    assert errors[tuple(result.best.values())] == errors.min()
    assert type(result.best["depth"]) is int
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert saved["best"] == result.best and "lowest mean validation" in saved["rule"]
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 12
    again = load_selection(tmp_path)
    assert again.best == result.best and again.runner_up() == result.runner_up()
    pd.testing.assert_frame_equal(again.summary, result.summary)


def test_ties_go_to_the_first_config_of_the_grid():
    rows = [
        {
            "lr": lr,
            "fold": 1,
            "status": "ok",
            "train_loss": 1.0,
            "train_error": 0.1,
            "val_loss": 1.0,
            "val_error": err,
            "seconds": 1.0,
        }
        for lr, err in ((0.1, 0.2), (0.01, 0.1), (0.001, 0.1))
    ]
    result = selection._result(rows, [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}], ["lr"])
    assert result.best == {"lr": 0.01} and result.runner_up() == {"lr": 0.001}


def test_folds_cut_the_training_set_into_disjoint_validation_parts():
    splits = kfold_splits(10, 3, shuffle=False, seed=0)
    assert [va.tolist() for _, va in splits] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]  # KFold(shuffle=False)
    for tr, va in splits:
        assert sorted(tr.tolist() + va.tolist()) == list(range(10))


def test_interrupted_run_resumes_without_recomputing(tiny_data, tmp_path, monkeypatch):
    cfg = grid_config()
    first = select(cfg, tiny_data, tmp_path, progress=False)
    (tmp_path / "trials" / "depth=2_mlp_hidden_dim=32_fold=3.json").unlink()  # as if killed before it
    calls = []
    real = selection.run_trial
    monkeypatch.setattr(selection, "run_trial", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    second = select(cfg, tiny_data, tmp_path, progress=False, log=lambda *_: None)
    assert calls == [({"depth": 2, "mlp_hidden_dim": 32}, 3)]
    cols = ["depth", "mlp_hidden_dim", "fold", "val_error", "train_loss"]
    pd.testing.assert_frame_equal(first.trials[cols], second.trials[cols])  # deterministic, same numbers


def test_trials_of_another_experiment_are_not_mixed_in(tiny_data, tmp_path):
    select(grid_config(grid={"depth": [1]}), tiny_data, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different experiment: lr \(0.005 there, 0.01 now\).*another output folder"):
        select(grid_config(grid={"depth": [1]}, lr=0.01), tiny_data, tmp_path, progress=False)


def test_a_diverging_config_is_recorded_as_failed(tiny_data, tmp_path):
    cfg = grid_config(grid={"lr": [0.005, 1e30]}, optimizer="sgd", folds=2)
    result = select(cfg, tiny_data, tmp_path, progress=False)
    failed = result.trials[result.trials["lr"] == 1e30]
    assert (failed["status"] == "failed").all() and failed["val_error"].isna().all()
    assert result.summary.set_index("lr").loc[1e30, "failed_folds"] == 2
    assert result.best == {"lr": 0.005}


@pytest.mark.parametrize("backend", ["loky", "threading", "multiprocessing"])
def test_parallel_trials_give_the_same_numbers(tiny_data, backend, tmp_path):
    cfg = grid_config(grid={"depth": [1, 2]}, folds=2)
    serial = select(cfg, tiny_data, progress=False)
    parallel = select(cfg.with_overrides(n_jobs=2, joblib_backend=backend), tiny_data, tmp_path, progress=False)
    cols = ["depth", "fold", "val_error", "val_loss"]
    pd.testing.assert_frame_equal(serial.trials[cols], parallel.trials[cols], atol=1e-5, rtol=1e-4)
    saved = [json.loads(p.read_text())["row"] for p in sorted((tmp_path / "trials").glob("*.json"))]
    assert sorted((r["depth"], r["fold"], r["val_error"]) for r in saved) == sorted(
        parallel.trials[["depth", "fold", "val_error"]].itertuples(index=False, name=None)
    )


def test_trials_written_before_a_setting_existed_are_reused(tiny_data, tmp_path):
    cfg = grid_config(grid={"depth": [1]}, folds=2)
    select(cfg, tiny_data, tmp_path, progress=False)
    for path in (tmp_path / "trials").glob("*.json"):  # as if written by a version without ema_decay
        stored = json.loads(path.read_text())
        del stored["settings"]["train"]["ema_decay"]
        path.write_text(json.dumps(stored))
    assert select(cfg, tiny_data, tmp_path, progress=False, log=lambda *_: None).reused == 2


def test_threads_with_dropout_are_refused(tiny_data):
    cfg = grid_config(grid={"depth": [1]}, folds=2, drop_rate=0.1, n_jobs=2, joblib_backend="threading")
    with pytest.raises(ValueError, match="joblib_backend='threading' with dropout"):
        select(cfg, tiny_data, progress=False)


def test_how_trials_run_does_not_make_them_another_experiment(tiny_data, tmp_path):
    cfg = grid_config(grid={"depth": [1]}, folds=2)
    select(cfg, tiny_data, tmp_path, progress=False)
    again = select(
        cfg.with_overrides(n_jobs=2, joblib_backend="threading", data_root="/elsewhere"),
        tiny_data,
        tmp_path,
        progress=False,
        log=lambda *_: None,
    )
    assert again.reused == 2
    with pytest.raises(ValueError, match=r"different experiment: compile \(False there, True now\)"):
        select(cfg.with_overrides(compile=True), tiny_data, tmp_path, progress=False)
