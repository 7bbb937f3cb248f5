"""Benchmark: training throughput of vitlib against the original implementation, the wall time of
the whole `seed` profile, and peak memory. Prints a table and writes JSON with the machine.

    python benchmarks/bench.py                 # everything (a few minutes on 2 CPU cores)
    python benchmarks/bench.py --skip-profile  # throughput only
    python benchmarks/bench.py --device cuda   # the same on a GPU

The original implementation is the transcription in vitlib/reference.py (per-sample and
per-head Python loops), trained with the same model size, optimizer and batch size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from vitlib.config import build_config
from vitlib.data import to_float
from vitlib.experiment import load_data, train_and_test
from vitlib.reference import ViT as ReferenceViT
from vitlib.selection import select
from vitlib.train import build_model, make_optimizer, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class PeakMemory:
    """Peak memory of this process and its children (joblib workers), sampled: the sum of their
    proportional set sizes (PSS: shared pages counted once overall) and, for comparison, of RSS."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.proc, self.interval, self.peak_pss, self.peak_rss = psutil.Process(), interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            pss = rss = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                    pss, rss = pss + info.pss, rss + info.rss
                except psutil.Error:
                    pass
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def throughput(model, device, batch: int, seconds: float, min_steps: int = 3) -> float:
    """Training samples per second: forward, cross-entropy, backward, Adam step."""
    cfg = build_config("seed").train
    opt = make_optimizer(model, cfg)
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        out = model(to_float(x))
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        step()
        steps += 1
    sync()
    return steps * batch / (time.perf_counter() - start)


def seed_profile(device: torch.device, overrides: dict) -> dict:
    """The `seed` profile (params/seed.yaml) end to end: 3-fold selection over the 2x2 grid, then
    the final model; `overrides` change how it runs (n_jobs, joblib_backend, compile)."""
    cfg = build_config(overrides={"device": str(device), **overrides}, yaml_path=ROOT / "params" / "seed.yaml")
    n_jobs, compile, backend = cfg.selection.n_jobs, cfg.train.compile, cfg.selection.joblib_backend
    if n_jobs < 1:
        n_jobs = os.cpu_count()
    data = load_data(cfg)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = select(cfg, data, tmp, progress=False)
        t_select = time.perf_counter() - start
        _, metrics = train_and_test(cfg.with_overrides(result.best), data, progress=False, log=lambda *a: None)
    return {
        "selection_seconds": t_select,
        "total_seconds": time.perf_counter() - start,
        "best": result.best,
        "val_error_mean": result.summary["val_error_mean"].round(4).tolist(),
        "test_accuracy": metrics["test_accuracy"],
        "n_jobs": n_jobs,
        "compile": compile,
        "joblib_backend": backend,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per throughput measurement")
    parser.add_argument("--skip-profile", action="store_true", help="skip the seed-profile wall time")
    parser.add_argument("--n-jobs", type=int, help="parallel trials for the profile (default: params/seed.yaml's)")
    parser.add_argument("--backend", help="joblib backend for the trials (default: params/seed.yaml's)")
    parser.add_argument("--eager", action="store_true", help="no torch.compile (throughput row and profile)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON")
    args = parser.parse_args()

    device = resolve_device(args.device)
    model_cfg = build_config("seed").model
    rows = []
    torch.manual_seed(0)
    ref = ReferenceViT(HURatio=model_cfg.mlp_hidden_dim // model_cfg.embed_dim, n_blocks=model_cfg.depth).to(device)
    ref_rate = throughput(ref, device, 128, args.seconds)
    rows.append(("original implementation (vitlib/reference.py)", 128, ref_rate))
    for batch in (128, 1024):
        rate = throughput(build_model(model_cfg, 0, device), device, batch, args.seconds)
        rows.append(("vitlib", batch, rate))
    if not args.eager:  # the first step compiles (and is not timed)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        rate = throughput(torch.compile(build_model(model_cfg, 0, device)), device, 128, args.seconds)
        rows.append(("vitlib + torch.compile", 128, rate))

    results = {
        "machine": machine(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": "seed preset (depth 3, MLP 16, embed 8, 2 heads, 4x4 patches)",
        "throughput": [
            {"implementation": n, "batch": b, "samples_per_s": r, "ratio_to_original": r / ref_rate} for n, b, r in rows
        ],
    }
    print(f"\nMachine: {results['machine']}")
    print(f"\n{'implementation':52} {'batch':>5} {'samples/s':>11} {'x original':>10}")
    for n, b, r in rows:
        print(f"{n:52} {b:>5} {r:>11,.0f} {r / ref_rate:>10.1f}")

    if not args.skip_profile:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        overrides = {"n_jobs": args.n_jobs, "joblib_backend": args.backend, "compile": False if args.eager else None}
        if device.type != "cpu":
            overrides["n_jobs"] = 1  # one GPU: trials one after another
        with PeakMemory() as mem:
            prof = seed_profile(device, {k: v for k, v in overrides.items() if v is not None})
        prof["peak_pss_gb"], prof["peak_rss_sum_gb"] = mem.peak_pss / 1e9, mem.peak_rss / 1e9
        if device.type == "cuda":
            prof["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
        results["seed_profile"] = prof
        print(
            f"\nseed profile (selection 4 configs x 3 folds x 5 epochs + final 5 epochs; n_jobs={prof['n_jobs']}, "
            f"{prof['joblib_backend']}, compile={prof['compile']}):"
        )
        print(
            f"  wall time {prof['total_seconds']:.0f} s (selection {prof['selection_seconds']:.0f} s), "
            f"peak memory {prof['peak_pss_gb']:.2f} GB (process tree PSS; RSS summed {prof['peak_rss_sum_gb']:.2f} GB)"
            + (f", GPU {prof['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in prof else "")
        )
        print(
            f"  best {prof['best']}, validation errors {prof['val_error_mean']}, "
            f"test accuracy {prof['test_accuracy']:.2%}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{device.type}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
