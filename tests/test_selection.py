import json

import pandas as pd
import pytest

import vitlib.selection as selection
from vitlib.config import build_config
from vitlib.selection import select

FAST = {"embed_dim": 16, "num_heads": 2, "normalize_input": True, "epochs": 2, "batch_size": 64}


def grid_config(**extra):
    return build_config("modern", {**FAST, "grid": {"depth": [1, 2], "mlp_hidden_dim": [16, 32]}, "folds": 3, **extra})


def test_table_summary_and_best_agree(tiny_data, tmp_path):
    result = select(grid_config(), tiny_data, tmp_path, progress=False)
    assert len(result.trials) == 12
    assert list(result.trials[["depth", "mlp_hidden_dim", "fold"]].itertuples(index=False, name=None))[:4] == \
        [(1, 16, 1), (1, 16, 2), (1, 16, 3), (1, 32, 1)]
    assert set(result.trials["status"]) == {"ok"}
    manual = result.trials.groupby(["depth", "mlp_hidden_dim"], sort=False)["val_error"].agg(["mean", "std"])
    assert result.summary["val_error_mean"].tolist() == pytest.approx(manual["mean"].tolist())
    assert result.summary["val_error_std"].tolist() == pytest.approx(manual["std"].tolist())
    best_row = result.summary.loc[result.summary["val_error_mean"].idxmin()]
    assert result.best == {"depth": int(best_row["depth"]), "mlp_hidden_dim": int(best_row["mlp_hidden_dim"])}
    assert type(result.best["depth"]) is int
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["best"] == result.best and "lowest mean validation" in saved["rule"]
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 12
    # each fold validates on a different third of the training set
    assert result.trials["val_error"].between(0, 1).all()


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
    assert sorted((r["depth"], r["fold"], r["val_error"]) for r in saved) == \
        sorted(parallel.trials[["depth", "fold", "val_error"]].itertuples(index=False, name=None))


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
