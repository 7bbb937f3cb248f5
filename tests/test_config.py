import pytest

from vitlib.config import PRESETS, build_config


def test_unknown_key_lists_the_valid_ones_and_suggests():
    with pytest.raises(ValueError) as err:
        build_config("seed", {"epoch": 1})
    msg = str(err.value)
    assert "unknown setting(s): 'epoch' (did you mean 'epochs'?)" in msg and "Valid: " in msg and "lr" in msg


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown preset 'sed'; valid presets: seed, original"):
        build_config("sed")


def test_yaml_file_with_its_own_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: original\nepochs: 2\ndepth: 2\n")
    cfg = build_config("seed", {"lr": 0.01}, path)
    assert cfg.model.head_softmax and cfg.model.depth == 2 and cfg.train.epochs == 2 and cfg.train.lr == 0.01
    path.write_text("epochs: 2\nbatchsize: 64\n")
    with pytest.raises(ValueError, match="'batchsize' \\(did you mean 'batch_size'\\?\\)"):
        build_config("seed", yaml_path=path)


def test_scientific_notation_is_a_float_wherever_a_float_goes(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string: in a settings file, a grid, or a flag's value."""
    from vitlib.commands import _parse_grid

    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5E-2\ngrid: {lr: [1e-3, 3e-3]}\n")
    cfg = build_config("seed", yaml_path=path)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.selection.grid) == (0.001, 0.05, {"lr": [0.001, 0.003]})
    assert build_config("seed", {"lr": "2e-4"}).train.lr == 0.0002
    assert _parse_grid(["lr=1e-3,0.01"]) == {"lr": [0.001, 0.01]}
    with pytest.raises(ValueError, match="lr must be of type float, got 'fast'"):
        build_config("seed", {"lr": "fast"})


def test_seed_preset_is_the_original_protocol():
    cfg = build_config("seed")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 0.005, 128, 5)
    assert (cfg.model.patch_size, cfg.model.embed_dim, cfg.model.num_heads) == (4, 8, 2)
    assert cfg.selection.folds == 3 and not cfg.selection.shuffle_folds
    assert cfg.grid_points() == [
        {"depth": 2, "mlp_hidden_dim": 16},
        {"depth": 2, "mlp_hidden_dim": 32},
        {"depth": 3, "mlp_hidden_dim": 16},
        {"depth": 3, "mlp_hidden_dim": 32},
    ]
    assert not cfg.model.head_softmax and build_config("original").model.head_softmax


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"folds": 1}, "folds must be >= 2"),
        ({"lr": -1}, "lr (learning rate) must be a positive number"),
        ({"patch_size": 3}, "patch_size=3 does not divide image_size=28"),
        ({"embed_dim": 9}, "embed_dim=9 is not divisible by num_heads=2"),
        ({"grid": {"dpth": [1]}}, "unknown grid key(s): 'dpth' (did you mean 'depth'?)"),
        ({"grid": {"depth": []}}, "grid['depth'] must be a non-empty list"),
        ({"grid": {"lr": [0.1, -0.1]}}, "lr (learning rate) must be a positive number"),
        ({"n_jobs": 0}, "n_jobs must be a positive number of workers or -1"),
    ],
)
def test_invalid_values_fail_before_anything_runs(overrides, message):
    with pytest.raises(ValueError) as err:
        build_config("seed", overrides)
    assert message in str(err.value)


def test_every_preset_is_valid():
    for name in PRESETS:
        assert build_config(name).grid_points()


def test_unknown_joblib_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"joblib_backend='spark' is not valid; choose one of \['loky', 'threading'"):
        build_config("seed", {"joblib_backend": "spark"})
