"""Accuracy the engine must reach: the course's models trained through ``models/`` on real data.

    python -m bench.accuracy                 # Fashion-MNIST and digits, device auto
    python -m bench.accuracy --device cuda --only fashion-mnist

Targets on Fashion-MNIST's published test set: logistic regression >= 84 %, the 400-200 MLP >= 88 %, the CNN
>= 91 %. The Debian package dataset-fashion-mnist provides the data; this script installs it if missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time

import torch

from bench.report import write_section
from models.architectures import ModelConfig, build_model
from models.datasets import FASHION_MNIST_DIR, builtin_splits
from models.optimizers import build_optimizer
from models.training import TrainConfig, fit, holdout_report, resolve_device, seed_everything

RUNS = [
    # dataset, architecture, params, optimizer, options, learning rate, epochs, batch size, target
    ("fashion-mnist", "logistic_regression", {}, "adam", {}, 0.001, 15, 128, 0.84),
    ("fashion-mnist", "mlp", {"hidden_sizes": [400, 200]}, "adam", {}, 0.001, 10, 64, 0.88),
    ("fashion-mnist", "cnn", {"channels": [32, 64], "hidden_size": 128, "dropout": 0.3}, "adam", {}, 0.001, 12, 128, 0.91),
    ("digits", "logistic_regression", {}, "newton", {}, 1.0, 3, None, 0.90),
    ("digits", "mlp", {"hidden_sizes": [400, 200]}, "adam", {}, 0.001, 30, 64, 0.95),
    ("digits", "cnn", {"channels": [32, 64], "hidden_size": 128}, "adam", {}, 0.001, 30, 64, 0.97),
]


def ensure_fashion_mnist() -> None:
    if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    else:
        raise SystemExit("Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", choices=["fashion-mnist", "digits"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    device = resolve_device(args.device)
    runs = [r for r in RUNS if args.only in (None, r[0])]
    if any(r[0] == "fashion-mnist" for r in runs):
        ensure_fashion_mnist()

    rows = ["| dataset | model | optimizer | epochs | test accuracy | target | wall time | train samples/s |",
            "|---|---|---|---|---|---|---|---|"]
    failed = []
    for dataset, arch, params, opt_name, options, lr, epochs, batch, target in runs:
        splits = builtin_splits(dataset, validation_split=0.0, test_split=0.2, seed=0)
        seed_everything(0)
        d = splits.train
        model = build_model(ModelConfig(arch, params, d.input_shape, d.num_classes, d.value_range))
        optimizer = build_optimizer(opt_name, model.parameters(), lr, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fit(model, optimizer, d, None, TrainConfig(epochs=epochs, batch_size=batch, device=str(device)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
        accuracy = holdout_report(model, splits.test, device)["test_accuracy"]
        speed = sum(len(d) for _ in result.history) / sum(m.seconds for m in result.history)
        label = arch if arch != "mlp" else "mlp 400-200"
        mark = "" if accuracy >= target else " (below target)"
        rows.append(f"| {dataset} | {label} | {opt_name} | {epochs} | {accuracy:.2%}{mark} | {target:.0%} | "
                    f"{wall:.1f} s | {speed:,.0f} |")
        print(rows[-1], flush=True)
        if accuracy < target:
            failed.append(f"{dataset} {label}")
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        write_section(f"accuracy-{device.type}", f"Accuracy ({device.type})", table)
    if failed:
        raise SystemExit(f"below target: {', '.join(failed)}")


if __name__ == "__main__":
    main()
