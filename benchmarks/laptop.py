"""Benchmark: the `laptop` recipe's training throughput and its whole training time, on this machine.

    python benchmarks/laptop.py            # throughput (compiled, eager, other precision), projected hour (~3 min)
    python benchmarks/laptop.py --train    # also the whole training, as `vitlib train --preset laptop` (~1 h)

Also times the model's prediction on the test set as `vitlib evaluate` makes it (with the shifted
copies of `test_shifts`). Throughput is measured on the recipe's real training step (`vitlib.train.fit`: augmentation on the
batch, forward, label-smoothed cross-entropy, backward, fused AdamW, EMA update), over one epoch of
a slice of MNIST after a first epoch that compiles. Prints a table and writes
benchmarks/results/laptop-<device>-<time>.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import ROOT, machine

from vitlib.config import build_config
from vitlib.experiment import load_data, train_and_test
from vitlib.inference import evaluate
from vitlib.train import build_model, fit, resolve_device


def step_throughput(overrides: dict, data, images: int) -> float:
    """Training images per second of the laptop recipe's step, over `images` images (second epoch)."""
    cfg = build_config("laptop", {"epochs": 2, "warmup_epochs": 0.0, **overrides})
    model = build_model(cfg.model, cfg.train.seed, resolve_device(cfg.train.device))
    history = fit(model, data.train_images[:images], data.train_labels[:images], cfg.train, progress=False)
    return images / history[-1]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--images", type=int, default=12_800, help="images per throughput measurement")
    parser.add_argument("--train", action="store_true", help="also train the whole recipe and time it")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON")
    args = parser.parse_args()

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    device = resolve_device(args.device)
    base = build_config("laptop", {"device": str(device), "data_root": str(ROOT / "data")})  # from any folder
    data = load_data(base)
    rows = []
    precision = {True: "bf16", False: "float32"}
    amp = base.train.amp
    variants = (
        (f"laptop recipe, torch.compile, {precision[amp]}", {}),
        (f"laptop recipe, eager, {precision[amp]}", {"compile": False}),
        # The other precision (bfloat16 matrix products pay on a CPU with AMX or AVX-512 BF16 only).
        (f"laptop recipe, torch.compile, {precision[not amp]}", {"amp": not amp}),
    )
    for name, overrides in variants:
        rate = step_throughput({"device": str(device), **overrides}, data, args.images)
        rows.append({"run": name, "batch": base.train.batch_size, "images_per_s": rate})
    # One epoch: the training images at the compiled rate, then the test pass the recipe does after it.
    model = build_model(base.model, 0, device).eval()
    evaluate(model, data.test_images[:1000], data.test_labels[:1000], shifts=0)  # warm-up, untimed
    start = time.perf_counter()
    evaluate(model, data.test_images, data.test_labels, shifts=0)  # the per-epoch curve reads each digit alone
    test_pass = time.perf_counter() - start
    # The final prediction (test_shifts): each digit and its 4 shifted copies, the digit alone from the same pass.
    start = time.perf_counter()
    evaluate(model, data.test_images, data.test_labels)
    predict_pass = time.perf_counter() - start
    epoch = len(data.train_images) / rows[0]["images_per_s"] + test_pass
    projected = base.train.epochs * epoch
    results = {
        "machine": machine(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": base.flat(),
        "throughput": rows,
        "test_pass_seconds": test_pass,
        "test_shifts": base.model.test_shifts,
        "prediction_pass_seconds": predict_pass,
        "projected_train_seconds": projected,
    }
    print(f"\nMachine: {results['machine']}")
    print(f"\n{'run':38} {'batch':>5} {'images/s':>9}")
    for r in rows:
        print(f"{r['run']:38} {r['batch']:>5} {r['images_per_s']:>9,.0f}")
    print(
        f"\nprojected training time: {base.train.epochs} epochs x ({len(data.train_images):,} images at "
        f"{rows[0]['images_per_s']:,.0f}/s + a {test_pass:.1f} s test pass) = {projected / 60:.1f} min"
    )
    views = (
        f"each digit and 4 copies shifted {base.model.test_shifts} px" if base.model.test_shifts else "each digit alone"
    )
    print(f"scoring the {len(data.test_images):,} test digits as the model predicts ({views}): {predict_pass:.1f} s")

    if args.train:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            _, metrics = train_and_test(base, data, tmp, progress=False, log=lambda *a: None)
            wall = time.perf_counter() - start
        results["train"] = {
            "wall_seconds": wall,
            "train_seconds": metrics["train_seconds"],
            "test_accuracy": metrics["test_accuracy"],
            "parameters": metrics["parameters"],
        }
        print(
            f"whole training: {wall / 60:.1f} min wall ({metrics['train_seconds'] / 60:.1f} min in training), "
            f"test accuracy {metrics['test_accuracy']:.2%}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"laptop-{device.type}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
