"""The training loop on a GPU, measured: eager steps against whole-step CUDA graphs, several jobs sharing one
GPU, the same-curve check, and ``fit`` against a hand-written loop.

    python -m bench.gpu              # on a GPU machine: every section, in about 3 minutes on an H200
    python -m bench.gpu --cpu        # fit against a hand-written loop on the CPU (the CPU path's 0.95x check)
    python -m bench.gpu --smoke      # every section at toy sizes on the CPU (graph rows run eagerly there)

Goals on an H100/H200: the 400-200 MLP at batch 64 at least 5x eager, at least 1.5 M samples/s at batch 512,
the CNN at batch 256 at least 3x eager, and 4 concurrent MLP jobs at least 3x the aggregate rate of one.
Throughput uses MNIST-shaped random data (the rate does not depend on the values); the same-curve check
trains on ``digits``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import time

import numpy as np
import torch
from torch.nn import functional as F

from bench.report import write_section
from models.architectures import ModelConfig, build_model
from models.dataformats import ArrayDataset
from models.datasets import load_builtin, split_dataset
from models.optimizers import build_optimizer
from models.training import TrainConfig, fit, seed_everything

ARCHITECTURES = {
    "logistic_regression": {},
    "mlp": {"hidden_sizes": [400, 200]},
    "cnn": {"channels": [32, 64], "hidden_size": 128},
    "lstm": {"hidden_size": 64},
}
SAME_CURVE_RTOL = 1e-2  # graph against eager, per-epoch training loss, same seed and device


def images(n: int) -> ArrayDataset:
    """MNIST-shaped random images and labels; fit moves them to the device once."""
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.rand((n, 1, 28, 28), generator=g), torch.randint(0, 10, (n,), generator=g), 10,
                        (0.0, 1.0))


def model_for(data: ArrayDataset, architecture: str, seed: int = 0, channels_last: bool = False):
    seed_everything(seed)
    model = build_model(ModelConfig(architecture, ARCHITECTURES[architecture], data.input_shape, data.num_classes,
                                    data.value_range))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, build_optimizer("adam", model.parameters(), 0.001)


def rate(data: ArrayDataset, architecture: str, batch: int, compile: str, device: str, epochs: int = 3,
         precision: str = "fp32", channels_last: bool = False) -> tuple[float, str]:
    """Samples/s of the last epoch (the first ones warm up and capture), and the path that ran."""
    model, opt = model_for(data, architecture, channels_last=channels_last)
    result = fit(model, opt, data, None, TrainConfig(epochs=epochs, batch_size=batch, device=device,
                                                     compile=compile, precision=precision))
    return result.history[-1].samples_per_second, result.path.path


def eager_against_graph(args, device: str) -> list[str]:
    rows = ["| model | batch | precision | eager samples/s | graph samples/s | graph / eager | path |",
            "|---|---|---|---|---|---|---|"]
    graph = "auto" if device == "cpu" else "graph"
    cases = [(arch, batch, "fp32", False) for arch in ARCHITECTURES for batch in (64, 512)]
    cases += [("cnn", 256, "fp32", False), ("cnn", 256, "bf16", False), ("cnn", 256, "bf16", True)]
    for arch, batch, precision, channels_last in cases:
        precision = precision if device == "cuda" else "fp32"
        data = images(args.samples // (4 if arch in ("cnn", "lstm") else 1))
        eager, _ = rate(data, arch, batch, "none", device, precision=precision, channels_last=channels_last)
        graphed, path = rate(data, arch, batch, graph, device, precision=precision, channels_last=channels_last)
        label = arch + (", channels-last" if channels_last else "")
        rows.append(f"| {label} | {batch} | {precision} | {eager:,.0f} | {graphed:,.0f} | {graphed / eager:.1f}x | "
                    f"{path} |")
        print(rows[-1], flush=True)
    return rows


def _job(device: str, samples: int, epochs: int, barrier, results) -> None:
    data = images(samples)
    model, opt = model_for(data, "mlp")
    config = TrainConfig(epochs=1, batch_size=64, device=device, compile="auto")
    fit(model, opt, data, None, config)  # warm-up and capture, outside the timed part
    barrier.wait()
    started = time.perf_counter()
    fit(model, opt, data, None, TrainConfig(epochs=epochs, batch_size=64, device=device, compile="auto"))
    results.put((samples * epochs, time.perf_counter() - started))


def concurrent_jobs(args, device: str) -> list[str]:
    """N processes, each training the 400-200 MLP at batch 64, started together: the aggregate rate."""
    rows = ["| concurrent MLP jobs | aggregate samples/s | against one job |", "|---|---|---|"]
    ctx = mp.get_context("spawn")
    one = None
    for n in (1, 2, 4):
        barrier, results = ctx.Barrier(n), ctx.Queue()
        workers = [ctx.Process(target=_job, args=(device, args.samples, args.epochs, barrier, results))
                   for _ in range(n)]
        for w in workers:
            w.start()
        done = [results.get(timeout=300) for _ in workers]
        for w in workers:
            w.join()
        aggregate = sum(s for s, _ in done) / max(seconds for _, seconds in done)
        one = one or aggregate
        rows.append(f"| {n} | {aggregate:,.0f} | {aggregate / one:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def same_curve(device: str) -> tuple[list[str], bool]:
    splits = split_dataset(load_builtin("digits"), validation_split=0.0, test_split=0.2, seed=0)
    curves = {}
    for compile in ("none", "auto"):
        model, opt = model_for(splits.train, "mlp", seed=3)
        result = fit(model, opt, splits.train, None, TrainConfig(epochs=5, batch_size=64, seed=3, device=device,
                                                                 compile=compile))
        curves[result.path.path if compile == "auto" else "eager"] = [m.train_loss for m in result.history]
    eager, other = curves["eager"], curves.get("graph", curves["eager"])
    worst = float(np.max(np.abs(np.array(other) - np.array(eager)) / np.array(eager)))
    ok = worst <= SAME_CURVE_RTOL
    rows = [f"Same seed, same device, `digits`, 400-200 MLP, Adam, 5 epochs: the graph's per-epoch training loss "
            f"differs from eager's by at most {worst:.2e} (relative; tolerance {SAME_CURVE_RTOL:g})"
            f"{'' if ok else ' (OUT OF TOLERANCE)'}.",
            "", "| epoch | eager train loss | graph train loss |", "|---|---|---|"]
    rows += [f"| {i} | {a:.6f} | {b:.6f} |" for i, (a, b) in enumerate(zip(eager, other), start=1)]
    print("\n".join(rows), flush=True)
    return rows, ok


def hand_written(data: ArrayDataset, device: str, epochs: int, batch: int = 64) -> float:
    """The loop anyone would write: the data resident on the device, a shuffled permutation per epoch."""
    model, opt = model_for(data, "mlp")
    model.to(device)
    x, y = data.x.to(device), data.y.to(device)
    g = torch.Generator().manual_seed(0)
    _sync(device)
    started = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).to(device).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(device)
    return len(x) * epochs / (time.perf_counter() - started)


def fit_against_hand_written(args, device: str) -> tuple[list[str], float]:
    """Interleaved, best of three: fit (eager) against the hand-written loop."""
    data = images(args.samples // 4)
    fits, hands = [], []
    for _ in range(3):
        model, opt = model_for(data, "mlp")
        _sync(device)
        started = time.perf_counter()
        fit(model, opt, data, None, TrainConfig(epochs=args.epochs, batch_size=64, device=device, compile="none"))
        _sync(device)
        fits.append(len(data) * args.epochs / (time.perf_counter() - started))
        hands.append(hand_written(data, device, args.epochs))
    ratio = max(fits) / max(hands)
    rows = ["| loop | samples/s (best of 3) |", "|---|---|", f"| hand-written | {max(hands):,.0f} |",
            f"| fit, eager | {max(fits):,.0f} |", "", f"fit / hand-written: {ratio:.2f}x (goal: at least 0.95x)."]
    print("\n".join(rows), flush=True)
    return rows, ratio


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def card() -> str:
    if not torch.cuda.is_available():
        return "no GPU"
    mps = subprocess.run(["bash", "-c", "nvidia-smi -q | grep -i 'compute mode'"], capture_output=True, text=True)
    return f"{torch.cuda.get_device_name(0)} ({mps.stdout.strip() or 'compute mode unknown'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="only fit against a hand-written loop, on the CPU")
    parser.add_argument("--smoke", action="store_true", help="every section at toy sizes on the CPU")
    parser.add_argument("--samples", type=int, default=None, help="training samples per run (default 60,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    device = "cpu" if args.cpu or args.smoke or not torch.cuda.is_available() else "cuda"
    args.samples = args.samples or (2048 if args.smoke else 20_000 if args.cpu else 60_000)
    print(f"device: {card() if device == 'cuda' else 'cpu'}", flush=True)
    loop_rows, ratio = fit_against_hand_written(args, device)
    if args.cpu:
        if not args.no_write:
            write_section("training-loop-cpu", "The CPU training loop against a hand-written one", "\n".join(loop_rows))
        raise SystemExit(0 if ratio >= 0.95 else "fit is below 0.95x the hand-written loop")
    body = [f"Card: {card()}.", "", "#### Eager steps against whole-step CUDA graphs", "",
            *eager_against_graph(args, device), "", "#### Several jobs on one GPU", "",
            *concurrent_jobs(args, device), "", "#### The same curve", ""]
    curve_rows, same = same_curve(device)
    body += [*curve_rows, "", "#### fit against a hand-written loop (eager)", "", *loop_rows]
    if not args.no_write and not args.smoke:
        write_section(f"training-{device}", "Training on the GPU: eager, CUDA graphs, shared GPUs", "\n".join(body))
    if not same:
        raise SystemExit("the graph's curve left the eager one's tolerance")


if __name__ == "__main__":
    main()
