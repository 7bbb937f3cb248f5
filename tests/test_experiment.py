import json

from vitlib.config import build_config
from vitlib.experiment import train_variants


def test_variants_are_trained_once_and_read_back(tiny_data, tmp_path):
    base = {"embed_dim": 16, "num_heads": 2, "normalize_input": True, "epochs": 1, "depth": 1}
    variants = {"seed 0": build_config("modern", base), "seed 1": build_config("modern", {**base, "seed": 1})}
    first = train_variants(variants, tiny_data, tmp_path, log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-0", "seed-1"]
    assert first["seed 0"]["test_accuracy"] != first["seed 1"]["test_accuracy"] or \
        (first["seed 0"]["test_correct"] != first["seed 1"]["test_correct"]).any()
    assert abs(first["seed 0"]["test_correct"].mean() - first["seed 0"]["test_accuracy"]) < 1e-9
    said = []
    again = train_variants(variants, tiny_data, tmp_path, log=said.append)
    assert said == [f"Reusing 2 finished run(s) from {tmp_path}: seed 0, seed 1"]
    assert again["seed 1"]["test_accuracy"] == first["seed 1"]["test_accuracy"]
    assert json.loads((tmp_path / "seed-1" / "config.json").read_text())["train"]["seed"] == 1
